//! [`LocalRedis`]: a private `redis-server` on a free loopback port, for tests, examples
//! and benchmarks that must not depend on (or disturb) a server someone else runs.
//!
//! Persistence is off by default (`--save "" --appendonly no`); [`LocalRedis::start_with`]
//! turns AOF on, and [`LocalRedis::kill`] and [`LocalRedis::restart`] crash it and bring
//! it back on the same port and data directory, for restart tests. The data directory is a
//! fresh temporary one, so nothing outlives the process; the server is killed on drop.

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
    persistence: Persistence,
}

/// How a [`LocalRedis`] keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Persistence {
    /// Nothing on disk (the default).
    #[default]
    None,
    /// AOF with `appendfsync everysec` (Redis' default): a crash loses up to about two
    /// seconds of acknowledged writes.
    AofEverySec,
    /// AOF with `appendfsync always`: a crash loses nothing acknowledged.
    AofAlways,
}

impl LocalRedis {
    /// Starts `redis-server` (found on `PATH`) on a free loopback port and waits until it
    /// answers `PING`.
    ///
    /// # Errors
    /// When the binary is missing (the message names the package to install), or the
    /// server does not answer within 10 s.
    pub fn start() -> io::Result<LocalRedis> {
        LocalRedis::start_with(Persistence::None)
    }

    /// Like [`start`](Self::start), keeping data as `persistence` says.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn start_with(persistence: Persistence) -> io::Result<LocalRedis> {
        let mut last = None;
        for _ in 0..3 {
            match LocalRedis::try_start(persistence) {
                Ok(r) => return Ok(r),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("redis-server did not start")))
    }

    fn try_start(persistence: Persistence) -> io::Result<LocalRedis> {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port();
        let dir = std::env::temp_dir().join(format!("pollgate-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let child = spawn(port, &dir, persistence)?;
        let mut server = LocalRedis {
            child,
            port,
            dir,
            persistence,
        };
        server.wait_ready()?;
        Ok(server)
    }

    /// SIGKILLs the server (no shutdown, no final fsync), as a crash would.
    ///
    /// # Errors
    /// When the signal cannot be sent.
    pub fn kill(&mut self) -> io::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Starts the server again on the same port and data directory (with AOF, it loads
    /// what it had written) and waits until it answers `PING`.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn restart(&mut self) -> io::Result<()> {
        if self.child.try_wait()?.is_none() {
            self.kill()?;
        }
        self.child = spawn(self.port, &self.dir, self.persistence)?;
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> io::Result<()> {
        let port = self.port;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Err(io::Error::other(format!("redis-server exited at start: {status}")));
            }
            if ping(port).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
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

/// Starts `redis-server` on `port` with `dir` as its data directory.
fn spawn(port: u16, dir: &std::path::Path, persistence: Persistence) -> io::Result<Child> {
    let (appendonly, fsync) = match persistence {
        Persistence::None => ("no", "everysec"),
        Persistence::AofEverySec => ("yes", "everysec"),
        Persistence::AofAlways => ("yes", "always"),
    };
    let spawned = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
        .args(["--appendonly", appendonly, "--appendfsync", fsync])
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn();
    match spawned {
        Ok(c) => Ok(c),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(io::Error::new(
            io::ErrorKind::NotFound,
            "redis-server not found on PATH: install the `redis-server` package \
             (Debian/Ubuntu: `apt-get install redis-server`; macOS: `brew install redis`), \
             or point POLLGATE_REDIS_URL / --redis-url at a running server",
        )),
        Err(e) => Err(e),
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
                .field(&crate::connect::redact_url(url))
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
