//! A PgBouncer in `pool_mode = transaction` in front of a test cluster, as
//! the hosted databases' pooled endpoints are: each transaction (or
//! statement outside one) may land on another server connection, so no
//! session state survives between them. Started as the `postgres` user
//! (PgBouncer refuses root) on a free port with its own unix socket
//! directory; stopped when dropped.

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::time::Duration;

use pgmaint::cluster::Cluster;

pub struct PgBouncer {
    pub port: u16,
    pub dir: PathBuf,
    child: std::process::Child,
}

impl PgBouncer {
    /// Starts one in front of `cluster`, with `pool_size` server
    /// connections per database and user (small, so clients share them).
    pub fn start(cluster: &Cluster, pool_size: u32) -> PgBouncer {
        // Debian puts it in /usr/sbin, which a user's PATH may leave out.
        let program = if std::path::Path::new("/usr/sbin/pgbouncer").is_file() {
            "/usr/sbin/pgbouncer"
        } else {
            super::require_tool(
                "pgbouncer",
                "the pooler tests run pgmaint through a real PgBouncer in transaction mode",
                "pgbouncer",
                "pgbouncer",
            );
            "pgbouncer"
        };
        let dir = tempfile::Builder::new()
            .prefix("pgmaint-pgbouncer-")
            .tempdir()
            .expect("a directory for pgbouncer")
            .keep();
        let ids = postgres_ids();
        if let Some((uid, gid)) = ids {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown pgbouncer's dir");
        }
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            listener.local_addr().expect("its address").port()
        };
        std::fs::write(dir.join("users.txt"), "\"postgres\" \"\"\n").expect("write auth_file");
        let ini = format!(
            "[databases]\n* = host=127.0.0.1 port={server}\n\n\
             [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir = {dir}\n\
             auth_type = trust\nauth_file = {dir}/users.txt\npool_mode = transaction\n\
             default_pool_size = {pool_size}\nmax_client_conn = 500\n\
             ignore_startup_parameters = extra_float_digits,options\n\
             logfile = {dir}/pgbouncer.log\nadmin_users = postgres\n",
            server = cluster.port,
            dir = dir.display(),
        );
        std::fs::write(dir.join("pgbouncer.ini"), ini).expect("write pgbouncer.ini");
        let mut command = std::process::Command::new(program);
        command
            .arg(dir.join("pgbouncer.ini"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr.log")).expect("stderr file"));
        if let Some((uid, gid)) = ids {
            command.uid(uid).gid(gid);
        }
        let mut child = command.spawn().expect("start pgbouncer");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = child.try_wait().expect("poll pgbouncer") {
                panic!(
                    "pgbouncer exited ({status}) before listening:\n{}{}",
                    std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default(),
                    std::fs::read_to_string(dir.join("pgbouncer.log")).unwrap_or_default()
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "pgbouncer did not listen on {port} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        PgBouncer { port, dir, child }
    }

    /// The URL of `database` through the pooler.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{database}?sslmode=disable",
            self.port
        )
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The postgres user's ids when running as root (PgBouncer refuses root).
fn postgres_ids() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let user = std::ffi::CString::new("postgres").expect("no NUL");
    // SAFETY: getpwnam reads a static record; the ids are copied out at once.
    let entry = unsafe { libc::getpwnam(user.as_ptr()) };
    assert!(
        !entry.is_null(),
        "as root, pgbouncer runs as the postgres user, and there is none"
    );
    Some(unsafe { ((*entry).pw_uid, (*entry).pw_gid) })
}
