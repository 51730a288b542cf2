//! Connecting the way libpq does: a URL from `--database-url`, then
//! `DATABASE_URL`, then the config's `[database] url`; whatever the URL leaves
//! out comes from libpq's variables (`PGHOST`, `PGPORT`, `PGUSER`,
//! `PGPASSWORD`, `PGDATABASE`, `PGSSLMODE`, `PGPASSFILE`, `PGAPPNAME`) and then
//! libpq's defaults, with the password from `.pgpass` last. tokio-postgres
//! knows none of the variables and only three sslmodes, so this module fills
//! the gaps; TLS is rustls.

use std::{path::PathBuf, str::FromStr, sync::Arc, time::Duration};

use futures_util::StreamExt;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_postgres::config::{Host, SslMode as DriverSslMode};
use tokio_postgres::{AsyncMessage, Client, Config, NoTls};

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "invalid connection string: {0}\n  help: write postgres://user@host:port/database?sslmode=require (the password is best kept in PGPASSWORD or ~/.pgpass)"
    )]
    BadUrl(String),
    #[error(
        "invalid sslmode `{0}`\n  help: use disable, prefer, require, verify-ca or verify-full"
    )]
    BadSslMode(String),
    #[error(
        "sslmode={0} needs a root certificate to check the server against\n  help: set sslrootcert=/path/to/ca.crt in the URL (or PGSSLROOTCERT), put it in ~/.postgresql/root.crt, or use sslrootcert=system for the system's trusted roots"
    )]
    NoRootCert(&'static str),
    #[error("cannot read root certificate {0}: {1}")]
    BadRootCert(PathBuf, String),
    #[error("could not connect to PostgreSQL ({target}): {cause}")]
    Unreachable { target: String, cause: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl FromStr for SslMode {
    type Err = ConnectError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => return Err(ConnectError::BadSslMode(other.into())),
        })
    }
}

/// Where and how to connect, resolved from URL, environment and defaults.
#[derive(Clone)]
pub struct Target {
    pub config: Config,
    pub ssl_mode: SslMode,
    pub root_cert: Option<String>,
    /// The config's `[database]` timeouts (pgmaint's defaults without
    /// one): what each transaction pgmaint opens sets LOCAL, and, on a
    /// `direct` target only, the session right after it connects.
    pub session: crate::db::SessionTimeouts,
    /// A session of its own (`[database] direct_url`): only here is a
    /// session setting kept. Any other target may be a transaction pooler,
    /// where a session SET would stay on the server connection and reach
    /// another client's transactions, so nothing is SET on it.
    pub direct: bool,
}

impl Target {
    /// `host H, port P, database D, user U`: for messages. No password.
    pub(crate) fn describe(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(p)) => p.display().to_string(),
            None => "?".into(),
        };
        format!(
            "host {host}, port {}, database {}, user {}",
            self.config.get_ports().first().copied().unwrap_or(5432),
            self.config.get_dbname().unwrap_or("?"),
            self.config.get_user().unwrap_or("?"),
        )
    }
}

/// The URL to use, by precedence: flag, `DATABASE_URL`, config.
pub(crate) fn choose_url(flag: Option<&str>, config: Option<&str>) -> Option<String> {
    flag.map(str::to_string)
        .or_else(|| std::env::var("DATABASE_URL").ok().filter(|v| !v.is_empty()))
        .or_else(|| config.map(str::to_string))
}

/// Builds the target from a URL (or none) and the environment.
pub fn resolve(
    url: Option<&str>,
    connect_timeout: Option<Duration>,
) -> Result<Target, ConnectError> {
    resolve_with(url, connect_timeout, &|name| {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    })
}

pub fn resolve_with(
    url: Option<&str>,
    connect_timeout: Option<Duration>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Target, ConnectError> {
    let (rest, mut sslmode, mut rootcert) = split_ssl_params(url.unwrap_or(""));
    // tokio-postgres gives a URL host without a port 5432; libpq gives PGPORT.
    let rest = match env("PGPORT") {
        Some(port) => with_default_port(&rest, &port),
        None => rest,
    };
    let mut config = if rest.trim().is_empty() {
        Config::new()
    } else {
        Config::from_str(&rest).map_err(|e| ConnectError::BadUrl(e.to_string()))?
    };
    if config.get_hosts().is_empty() {
        match env("PGHOST") {
            Some(host) => {
                config.host(&host);
            }
            None => {
                let socket = ["/var/run/postgresql", "/tmp"]
                    .into_iter()
                    .find(|d| std::path::Path::new(d).exists());
                config.host(socket.unwrap_or("localhost"));
            }
        }
    }
    if config.get_ports().is_empty() {
        let port = env("PGPORT").and_then(|p| p.parse().ok()).unwrap_or(5432);
        config.port(port);
    }
    if config.get_user().is_none() {
        let user = env("PGUSER")
            .unwrap_or_else(|| whoami::username().unwrap_or_else(|_| "postgres".into()));
        config.user(&user);
    }
    if config.get_dbname().is_none() {
        let db = env("PGDATABASE")
            .unwrap_or_else(|| config.get_user().unwrap_or("postgres").to_string());
        config.dbname(&db);
    }
    if config.get_application_name().is_none() {
        config.application_name(env("PGAPPNAME").unwrap_or_else(|| "pgmaint".into()));
    }
    if config.get_connect_timeout().is_none() {
        let from_env = env("PGCONNECT_TIMEOUT")
            .and_then(|s| s.parse().ok())
            .map(Duration::from_secs);
        config.connect_timeout(
            connect_timeout
                .or(from_env)
                .unwrap_or(Duration::from_secs(10)),
        );
    }
    if config.get_password().is_none() {
        let password = env("PGPASSWORD").or_else(|| {
            let file = env("PGPASSFILE")
                .map(PathBuf::from)
                .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".pgpass")))?;
            pgpass_lookup(&file, &config)
        });
        if let Some(password) = password {
            config.password(password);
        }
    }
    sslmode = sslmode.or_else(|| env("PGSSLMODE"));
    rootcert = rootcert.or_else(|| env("PGSSLROOTCERT")).or_else(|| {
        let default = PathBuf::from(env("HOME")?).join(".postgresql/root.crt");
        default.exists().then(|| default.display().to_string())
    });
    let mut ssl_mode = sslmode.as_deref().unwrap_or("prefer").parse()?;
    // libpq never uses TLS on a Unix-domain socket.
    if matches!(config.get_hosts().first(), Some(Host::Unix(_))) {
        ssl_mode = SslMode::Disable;
    }
    config.ssl_mode(match ssl_mode {
        SslMode::Disable => DriverSslMode::Disable,
        SslMode::Prefer => DriverSslMode::Prefer,
        _ => DriverSslMode::Require,
    });
    Ok(Target {
        config,
        ssl_mode,
        root_cert: rootcert,
        session: crate::db::SessionTimeouts::default(),
        direct: false,
    })
}

/// Takes `sslmode` and `sslrootcert` out of a URL or `key=value` string,
/// since tokio-postgres rejects the modes it does not implement.
fn split_ssl_params(url: &str) -> (String, Option<String>, Option<String>) {
    let mut sslmode = None;
    let mut rootcert = None;
    let mut take = |key: &str, value: &str| -> bool {
        match key {
            "sslmode" => sslmode = Some(value.to_string()),
            "sslrootcert" => rootcert = Some(value.to_string()),
            _ => return false,
        }
        true
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            Some((base, query)) => {
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|pair| {
                        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                        !take(k, &percent_decode(v))
                    })
                    .collect();
                if kept.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
            None => url.to_string(),
        }
    } else {
        url.split_whitespace()
            .filter(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                !take(k.trim(), v.trim_matches('\''))
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    (rest, sslmode, rootcert)
}

/// Adds `:port` to each host of a URL that names none.
fn with_default_port(url: &str, port: &str) -> String {
    let Some((scheme, after)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = after.find(['/', '?']).unwrap_or(after.len());
    let (authority, tail) = after.split_at(end);
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => authority.split_at(at + 1),
        None => ("", authority),
    };
    if hosts.is_empty() {
        return url.to_string();
    }
    let hosts: Vec<String> = hosts
        .split(',')
        .map(|h| {
            let has_port = if h.starts_with('[') {
                h.contains("]:")
            } else {
                h.contains(':')
            };
            if has_port {
                h.to_string()
            } else {
                format!("{h}:{port}")
            }
        })
        .collect();
    format!("{scheme}://{userinfo}{}{tail}", hosts.join(","))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 3 <= bytes.len()
            && let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The password `.pgpass` gives for this host, port, database and user.
/// Like libpq, a file that others can read is ignored.
fn pgpass_lookup(file: &std::path::Path, config: &Config) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(file).ok()?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            "password file {} has group or world access; ignoring it (chmod 0600 it)",
            file.display()
        );
        return None;
    }
    let text = std::fs::read_to_string(file).ok()?;
    let host = match config.get_hosts().first()? {
        Host::Tcp(h) => h.clone(),
        Host::Unix(_) => "localhost".to_string(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let wanted = [
        host.as_str(),
        port.as_str(),
        config.get_dbname().unwrap_or(""),
        config.get_user().unwrap_or(""),
    ];
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .find_map(|line| {
            let fields = split_pgpass_line(line);
            if fields.len() < 5 {
                return None;
            }
            let matches = wanted
                .iter()
                .zip(&fields)
                .all(|(want, field)| field == "*" || field == want);
            matches.then(|| fields[4..].join(":"))
        })
}

fn split_pgpass_line(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    fields.last_mut().unwrap().push(next);
                }
            }
            ':' => fields.push(String::new()),
            c => fields.last_mut().unwrap().push(c),
        }
    }
    fields
}

/// Opens a connection; on a `direct` target, sets the session timeouts on
/// it. Server
/// notices (from VACUUM, functions' RAISE NOTICE) are passed to the log
/// rather than lost.
pub async fn connect(target: &Target) -> Result<Client, ConnectError> {
    open(target, None).await
}

/// A connection whose `NOTIFY`s (for the channels it `LISTEN`s to) arrive
/// on the receiver, which ends when the connection does.
pub(crate) async fn connect_listening(
    target: &Target,
) -> Result<
    (
        Client,
        tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::Notification>,
    ),
    ConnectError,
> {
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    Ok((open(target, Some(sender)).await?, receiver))
}

async fn open(
    target: &Target,
    notifications: Option<tokio::sync::mpsc::UnboundedSender<tokio_postgres::Notification>>,
) -> Result<Client, ConnectError> {
    let unreachable = |cause: String| ConnectError::Unreachable {
        target: target.describe(),
        cause,
    };
    macro_rules! drive {
        ($connect:expr) => {{
            let (client, mut connection) = $connect.await.map_err(|e| unreachable(crate::db::describe(&e)))?;
            let notifications = notifications.clone();
            tokio::spawn(async move {
                let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                while let Some(message) = messages.next().await {
                    match message {
                        Ok(AsyncMessage::Notice(notice)) => {
                            tracing::info!(target: "postgres", "{}: {}", notice.severity(), notice.message())
                        }
                        Ok(AsyncMessage::Notification(notification)) => {
                            if let Some(sender) = &notifications {
                                let _ = sender.send(notification);
                            }
                        }
                        Ok(_) => {}
                        Err(err) => {
                            tracing::debug!("connection closed: {}", crate::db::describe(&err));
                            break;
                        }
                    }
                }
            });
            client
        }};
    }
    let client = match target.ssl_mode {
        SslMode::Disable => drive!(target.config.connect(NoTls)),
        mode => drive!(
            target
                .config
                .connect(tls_connector(mode, target.root_cert.as_deref())?)
        ),
    };
    // On a session of its own, before anything else: from here on no
    // statement of it waits on a lock longer than lock_timeout. A SET rather
    // than the startup packet's `options`, which transaction poolers refuse.
    // Elsewhere no session state at all: each transaction sets its own
    // timeouts LOCAL (`db::read_only`, the batches, the health checks).
    if target.direct {
        target
            .session
            .apply(&client)
            .await
            .map_err(|e| unreachable(crate::db::describe(&e)))?;
    }
    Ok(client)
}

fn tls_connector(
    mode: SslMode,
    root_cert: Option<&str>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, ConnectError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions");
    let config = match mode {
        SslMode::Disable | SslMode::Prefer | SslMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
            .with_no_client_auth(),
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let name = if mode == SslMode::VerifyCa {
                "verify-ca"
            } else {
                "verify-full"
            };
            let roots = Arc::new(root_store(
                root_cert.ok_or(ConnectError::NoRootCert(name))?,
            )?);
            let webpki =
                rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| {
                        ConnectError::BadRootCert(
                            root_cert.unwrap_or_default().into(),
                            e.to_string(),
                        )
                    })?;
            let verifier: Arc<dyn ServerCertVerifier> = if mode == SslMode::VerifyCa {
                Arc::new(ChainOnly(webpki))
            } else {
                webpki
            };
            builder
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth()
        }
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

fn root_store(root_cert: &str) -> Result<rustls::RootCertStore, ConnectError> {
    use rustls::pki_types::pem::PemObject;
    let mut store = rustls::RootCertStore::empty();
    if root_cert == "system" {
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = store.add(cert);
        }
        return Ok(store);
    }
    let path = PathBuf::from(root_cert);
    let certs = CertificateDer::pem_file_iter(&path)
        .map_err(|e| ConnectError::BadRootCert(path.clone(), e.to_string()))?;
    for cert in certs {
        let cert = cert.map_err(|e| ConnectError::BadRootCert(path.clone(), e.to_string()))?;
        store
            .add(cert)
            .map_err(|e| ConnectError::BadRootCert(path.clone(), e.to_string()))?;
    }
    Ok(store)
}

/// `sslmode=require`/`prefer`: encrypt, but do not check the certificate
/// (what libpq does without a root certificate).
#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `sslmode=verify-ca`: the chain must lead to a trusted root; the host name
/// is not compared.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(m, c, d)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Whether `target` looks like a transaction-mode pooler (PgBouncer,
/// Supavisor, a hosted database's pooled endpoint) rather than a session of
/// its own: for messages only (`check`, the daemon's first log line, the
/// refusal of a run that needs a session), since it can miss. Two clients:
/// the first asks its backend's pid, the second holds a transaction, the
/// first asks again. Direct, the first keeps its backend and the second
/// has another; through a pooler the second may get the first's former
/// backend, or the first lands on another one (or waits for one). Returns
/// what it saw, or None when it saw nothing of a pooler.
pub async fn detect_pooler(target: &Target) -> Option<String> {
    async fn pid(client: &Client) -> Option<String> {
        client
            .simple_query("SELECT pg_backend_pid()")
            .await
            .ok()?
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
                _ => None,
            })
    }
    let first = connect(target).await.ok()?;
    let second = connect(target).await.ok()?;
    let before = pid(&first).await?;
    second.simple_query("BEGIN").await.ok()?;
    let held = pid(&second).await;
    let after = tokio::time::timeout(std::time::Duration::from_millis(500), pid(&first)).await;
    let _ = second.simple_query("COMMIT").await;
    let seen = match (held, after) {
        (Some(held), _) if held == before => Some(format!(
            "two connections ran on the same server backend (pid {before}), one after the other"
        )),
        (_, Ok(Some(after))) if after != before => Some(format!(
            "two statements of one connection, outside a transaction, ran on different server backends (pids {before} and {after})"
        )),
        (_, Err(_)) => Some(
            "a statement outside a transaction waited for a server connection while another client held one".to_string(),
        ),
        _ => None,
    };
    seen.map(|how| format!("this looks like a transaction pooler: {how}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn url_wins_and_env_fills_the_gaps() {
        let vars = [
            ("PGHOST", "db.internal"),
            ("PGPORT", "6543"),
            ("PGUSER", "envuser"),
            ("PGDATABASE", "envdb"),
        ];
        let t = resolve_with(
            Some("postgres://urluser@urlhost/urldb?sslmode=disable"),
            None,
            &env(&vars),
        )
        .unwrap();
        assert_eq!(
            t.describe(),
            "host urlhost, port 6543, database urldb, user urluser"
        );
        assert_eq!(t.ssl_mode, SslMode::Disable);
        let t = resolve_with(None, None, &env(&vars)).unwrap();
        assert_eq!(
            t.describe(),
            "host db.internal, port 6543, database envdb, user envuser"
        );
    }

    #[test]
    fn verify_modes_are_understood() {
        let t = resolve_with(
            Some("postgres://u@h/d?sslmode=verify-full&sslrootcert=/ca.pem"),
            None,
            &env(&[]),
        )
        .unwrap();
        assert_eq!(
            (t.ssl_mode, t.root_cert.as_deref()),
            (SslMode::VerifyFull, Some("/ca.pem"))
        );
        assert!(matches!(
            resolve_with(Some("postgres://u@h/d?sslmode=maybe"), None, &env(&[])),
            Err(ConnectError::BadSslMode(_))
        ));
    }

    #[test]
    fn describe_never_shows_the_password() {
        let t = resolve_with(Some("postgres://u:hunter2@h/d"), None, &env(&[])).unwrap();
        assert!(!t.describe().contains("hunter2"));
    }

    #[test]
    fn pgpass_matches_with_wildcards_and_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(&file, "# comment\nother:5432:*:u:nope\nh:*:d:u:pa\\:ss\n").unwrap();
        std::os::unix::fs::PermissionsExt::set_mode(
            &mut std::fs::metadata(&file).unwrap().permissions(),
            0o600,
        );
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let vars = [("PGPASSFILE", file.to_str().unwrap())];
        let t = resolve_with(Some("postgres://u@h:5433/d"), None, &env(&vars)).unwrap();
        assert_eq!(t.config.get_password(), Some(&b"pa:ss"[..]));
    }
}
