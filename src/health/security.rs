//! Security: superusers and the roles that can log in as one, roles that
//! can log in without a password, `trust` lines in pg_hba.conf, SSL off, md5
//! password hashing, CREATE on the public schema, and extensions with
//! updates available. Parts that need privileges pgmaint lacks say so.

use super::{Check, CheckContext, CheckName, Finding, Level, Outcome, found};
use crate::unnamed::Unnamed;

pub(super) struct Security;

impl Check for Security {
    fn name(&self) -> CheckName {
        CheckName::Security
    }

    async fn run(&self, ctx: &CheckContext<'_>) -> Result<Outcome, tokio_postgres::Error> {
        let mut findings = superusers(ctx).await?;
        let mut unreadable = Vec::new();
        match passwordless_roles(ctx).await {
            Ok(found) => findings.extend(found),
            Err(_) => unreadable.push("roles' passwords (pg_authid needs superuser)"),
        }
        match trust_lines(ctx).await {
            Ok(found) => findings.extend(found),
            Err(_) => unreadable.push("pg_hba.conf (pg_hba_file_rules needs superuser)"),
        }
        findings.extend(server_settings(ctx).await?);
        // Unreadable without superuser, like the passwords above; the
        // setting itself is reported either way.
        findings.extend(md5_roles(ctx).await.unwrap_or_default());
        findings.extend(public_create(ctx).await?);
        findings.extend(extension_updates(ctx).await?);
        let summary = if unreadable.is_empty() {
            None
        } else {
            let problems = findings.iter().filter(|f| f.status > Level::Ok).count();
            Some(format!(
                "{problems} finding(s); not readable without more privileges: {}",
                unreadable.join(", ")
            ))
        };
        Ok(Outcome::Findings(findings, summary))
    }
}

/// Superusers other than `postgres`, and the login roles that can assume
/// them.
async fn superusers(ctx: &CheckContext<'_>) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let rows = ctx
        .client
        .rows(
            "SELECT r.rolname::text,
                    coalesce((SELECT string_agg(m.rolname::text, ', ') FROM pg_auth_members am JOIN pg_roles m ON m.oid = am.member
                               WHERE am.roleid = r.oid AND m.rolcanlogin), '')
               FROM pg_roles r WHERE r.rolsuper AND r.rolname <> 'postgres'",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let members: String = r.get(1);
            let value = if members.is_empty() { "superuser".to_string() } else { format!("superuser; can be assumed by {members}") };
            found(ctx, format!("role {}", r.get::<_, String>(0)), value, "keep superusers to the one the operator uses; give applications only the privileges they need")
        })
        .collect())
}

/// Roles that can log in without a password (reading pg_authid needs
/// superuser).
async fn passwordless_roles(ctx: &CheckContext<'_>) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let rows = ctx
        .client
        .rows(
            "SELECT rolname::text FROM pg_authid WHERE rolcanlogin AND rolpassword IS NULL",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            found(ctx, format!("role {}", r.get::<_, String>(0)), "can log in, has no password".into(),
                "with `trust` or `peer` lines anyone on those routes is this role: set a password (\\password) or NOLOGIN")
        })
        .collect())
}

/// `trust` lines of pg_hba.conf: critical when they are not for local
/// sockets (reading pg_hba_file_rules needs superuser).
async fn trust_lines(ctx: &CheckContext<'_>) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let rows = ctx
        .client
        .rows("SELECT type, coalesce(array_to_string(database, ','), ''), coalesce(array_to_string(user_name, ','), ''), coalesce(address, 'local'), line_number, coalesce(netmask, '') FROM pg_hba_file_rules WHERE auth_method = 'trust'", &[])
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let address: String = r.get(3);
            let mut f = found(ctx, format!("pg_hba.conf line {}", r.get::<_, i32>(4)),
                format!("{} {} {} {address} trust", r.get::<_, String>(0), r.get::<_, String>(1), r.get::<_, String>(2)),
                "trust lets anyone who can reach that route in without a password: use scram-sha-256 (or peer for local sockets)");
            // The local socket and the loopback addresses are open only to
            // those with a shell on the machine (a warning, as initdb's
            // defaults and throwaway clusters have them); any other
            // address is open to the network (critical).
            f.status = if is_local(&address, &r.get::<_, String>(5)) { Level::Warning } else { Level::Critical };
            f.threshold = "trust on the local socket or loopback: warning; on any other address: critical".into();
            f
        })
        .collect())
}

/// The local socket, or addresses within the loopback network only (the
/// netmask at least /8 for 127.0.0.0, exactly ::1 for IPv6).
fn is_local(address: &str, netmask: &str) -> bool {
    match address {
        "local" => true,
        "::1" => netmask == "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        a => a.starts_with("127.") && netmask.starts_with("255."),
    }
}

/// `ssl` off and `password_encryption = md5`.
async fn server_settings(ctx: &CheckContext<'_>) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let mut findings = Vec::new();
    let ssl: String = ctx
        .client
        .row("SELECT current_setting('ssl')", &[])
        .await?
        .get(0);
    if ssl != "on" {
        findings.push(found(ctx, "ssl".into(), ssl, "connections travel unencrypted: set ssl = on with a certificate, and hostssl lines in pg_hba.conf"));
    }
    let hashing: String = ctx
        .client
        .row("SELECT current_setting('password_encryption')", &[])
        .await?
        .get(0);
    if hashing == "md5" {
        findings.push(found(
            ctx,
            "password_encryption".into(),
            hashing,
            "set password_encryption = 'scram-sha-256' and reset the passwords",
        ));
    }
    Ok(findings)
}

/// Roles whose password is still an md5 hash.
async fn md5_roles(ctx: &CheckContext<'_>) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let rows = ctx
        .client
        .rows(
            "SELECT rolname::text FROM pg_authid WHERE rolpassword LIKE 'md5%'",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            found(
                ctx,
                format!("role {}", r.get::<_, String>(0)),
                "md5 password".into(),
                "re-set its password under scram-sha-256 hashing",
            )
        })
        .collect())
}

/// CREATE on the public schema granted to every role.
async fn public_create(ctx: &CheckContext<'_>) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let public_create: bool = ctx
        .client
        .row(
            "SELECT coalesce(bool_or(a.grantee = 0 AND a.privilege_type = 'CREATE'), false)
               FROM pg_namespace n, aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a WHERE n.nspname = 'public'",
            &[],
        )
        .await?
        .get(0);
    Ok(public_create
        .then(|| {
            found(
                ctx,
                "schema public".into(),
                "every role can CREATE in it".into(),
                "REVOKE CREATE ON SCHEMA public FROM PUBLIC (the default since PostgreSQL 15)",
            )
        })
        .into_iter()
        .collect())
}

/// Installed extensions with a newer version available.
async fn extension_updates(ctx: &CheckContext<'_>) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let rows = ctx
        .client
        .rows("SELECT name::text, installed_version, default_version FROM pg_available_extensions WHERE installed_version IS NOT NULL AND installed_version <> default_version", &[])
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let mut f = found(
                ctx,
                format!("extension {}", r.get::<_, String>(0)),
                format!(
                    "{} installed, {} available",
                    r.get::<_, String>(1),
                    r.get::<_, String>(2)
                ),
                "ALTER EXTENSION ... UPDATE after reading its release notes",
            );
            f.status = Level::Warning;
            f
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::is_local;

    #[test]
    fn only_the_socket_and_loopback_networks_are_local() {
        assert!(is_local("local", ""));
        assert!(is_local("127.0.0.1", "255.255.255.255"));
        assert!(is_local("127.0.0.0", "255.0.0.0"));
        assert!(is_local("::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"));
        assert!(!is_local("127.0.0.0", "0.0.0.0"), "127.0.0.0/0 is everyone");
        assert!(!is_local("0.0.0.0", "0.0.0.0"));
        assert!(!is_local("10.0.0.0", "255.0.0.0"));
        assert!(!is_local("::", "::"));
        assert!(!is_local("all", ""));
        assert!(!is_local("samenet", ""));
    }
}
