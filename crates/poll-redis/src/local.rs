//! [`LocalRedis`]: a private `redis-server` on a free loopback port, for tests, examples
//! and benchmarks that must not depend on (or disturb) a server someone else runs.
//!
//! Persistence is off (`--save "" --appendonly no`) and the data directory is a fresh
//! temporary one, so nothing outlives the process; the server is killed on drop.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The environment variable naming an existing server to use instead of starting one
/// ([`RedisServer::from_env_or_start`]).
pub const REDIS_URL_ENV: &str = "POLLGATE_REDIS_URL";

/// A `redis-server` child process on `127.0.0.1`, stopped when dropped.
///
/// ```no_run
/// let redis = pollgate_redis::LocalRedis::start()?; // errors name the package to install
/// let url = redis.url(); // redis://127.0.0.1:{port}
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct LocalRedis {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl LocalRedis {
    /// Starts `redis-server` (found on `PATH`) on a free loopback port and waits until it
    /// answers `PING`.
    ///
    /// # Errors
    /// When the binary is missing (the message names the package to install), or the
    /// server does not answer within 10 s.
    pub fn start() -> io::Result<LocalRedis> {
        let mut last = None;
        for _ in 0..3 {
            match LocalRedis::try_start() {
                Ok(r) => return Ok(r),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("redis-server did not start")))
    }

    fn try_start() -> io::Result<LocalRedis> {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port();
        let dir = std::env::temp_dir().join(format!("pollgate-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let spawned = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn();
        let child = match spawned {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "redis-server not found on PATH: install the `redis-server` package \
                     (Debian/Ubuntu: `apt-get install redis-server`; macOS: `brew install redis`), \
                     or point POLLGATE_REDIS_URL / --redis-url at a running server",
                ));
            }
            Err(e) => return Err(e),
        };
        let mut server = LocalRedis { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = server.child.try_wait()? {
                return Err(io::Error::other(format!("redis-server exited at start: {status}")));
            }
            if ping(port).is_ok() {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = server.child.kill();
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "redis-server did not answer PING within 10 s",
        ))
    }

    /// The server's URL (`redis://127.0.0.1:{port}`).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for LocalRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One `PING` over a plain socket.
fn ping(port: u16) -> io::Result<()> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    s.set_read_timeout(Some(Duration::from_millis(500)))?;
    s.write_all(b"PING\r\n")?;
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf)?;
    if &buf == b"+PONG\r\n" {
        Ok(())
    } else {
        Err(io::Error::other("unexpected PING reply"))
    }
}

/// A Redis server to use: the one [`REDIS_URL_ENV`] names, or a private one started here.
pub enum RedisServer {
    /// An existing server, from the environment.
    External(String),
    /// A private server, stopped on drop.
    Local(LocalRedis),
}

impl std::fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisServer::External(url) => f
                .debug_tuple("External")
                .field(&crate::transport::redact_url(url))
                .finish(),
            RedisServer::Local(l) => f.debug_tuple("Local").field(l).finish(),
        }
    }
}

impl RedisServer {
    /// Uses `$POLLGATE_REDIS_URL` if set, else starts a [`LocalRedis`].
    ///
    /// # Errors
    /// When no URL is set and `redis-server` cannot be started.
    pub fn from_env_or_start() -> io::Result<RedisServer> {
        match std::env::var(REDIS_URL_ENV) {
            Ok(url) if !url.is_empty() => Ok(RedisServer::External(url)),
            _ => LocalRedis::start().map(RedisServer::Local),
        }
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        match self {
            RedisServer::External(url) => url.clone(),
            RedisServer::Local(l) => l.url(),
        }
    }
}
