//! The managed `redis-server` child used when no `REDIS_URL` is given: started with
//! `redis/redis.conf` (embedded), its data under `{data_dir}/redis`, restarted if it
//! dies, stopped (SIGTERM, so the AOF is flushed) on shutdown.
//!
//! It listens on no TCP port, only on the unix socket `{data_dir}/redis/redis.sock`
//! (mode 0600, in a 0700 directory of a 0700 data dir): only this service's user can
//! reach it (`redis-cli -s <data dir>/redis/redis.sock`); there is no password to leak.
//!
//! It never outlives its parent: the kernel sends it SIGTERM when the parent dies, even
//! by `kill -9` (`PR_SET_PDEATHSIG`), and its pid is kept in `{data_dir}/redis/managed.pid`
//! so a start finding a stale instance of the same data dir stops it first.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The configuration every managed instance starts from; `dir` and `unixsocket` are
/// given on the command line.
pub const REDIS_CONF: &str = include_str!("../../../../redis/redis.conf");

/// The socket's file name, in `{data_dir}/redis`.
pub const SOCKET: &str = "redis.sock";

/// The longest socket path the kernel takes (`sun_path` is 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// A supervised redis-server child.
pub struct ManagedRedis {
    /// `unix://{data_dir}/redis/redis.sock`.
    url: String,
    /// Tells the supervisor to stop the child.
    stop: CancellationToken,
    /// The supervisor; ends after the child has exited.
    supervisor: JoinHandle<()>,
}

/// The `unix://` URL of the socket at `path` (percent-encoded as a file URL's path).
fn socket_url(path: &Path) -> anyhow::Result<String> {
    let file = url::Url::from_file_path(path)
        .map_err(|()| anyhow::anyhow!("{} is not an absolute path", path.display()))?;
    Ok(format!("unix://{}", file.path()))
}

struct Launch {
    binary: PathBuf,
    conf: PathBuf,
    dir: PathBuf,
    /// The unix socket it listens on.
    socket: PathBuf,
    /// `unix://` URL of `socket`.
    url: String,
}

impl Launch {
    async fn spawn(&self) -> anyhow::Result<Child> {
        let parent = std::process::id() as libc::pid_t;
        let mut command = Command::new(&self.binary);
        // SAFETY: `die_with_parent` makes only async-signal-safe calls, as pre_exec needs.
        unsafe {
            command.pre_exec(move || tapedeck_runtime::die_with_parent(parent, libc::SIGTERM));
        }
        let mut child = command
            .arg(&self.conf)
            .arg("--unixsocket")
            .arg(&self.socket)
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        if let Some(pid) = child.id() {
            std::fs::write(self.dir.join(PIDFILE), pid.to_string())
                .with_context(|| format!("writing {}", self.dir.join(PIDFILE).display()))?;
        }
        let client = redis::Client::open(self.url.as_str())?;
        for _ in 0..100 {
            if let Some(status) = child.try_wait()? {
                bail!("redis-server exited at startup ({status})");
            }
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
            {
                return Ok(child);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("redis-server did not answer PING within 10 s")
    }
}

impl ManagedRedis {
    /// Starts `binary` with its data in `data_dir/redis`, and waits until it answers.
    pub async fn start(binary: &Path, data_dir: &Path) -> anyhow::Result<Self> {
        let dir = std::fs::canonicalize(data_dir)
            .with_context(|| format!("finding the data dir {}", data_dir.display()))?
            .join("redis");
        super::private_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        stop_stale_instance(&dir).await;
        let conf = dir.join("redis.conf");
        std::fs::write(&conf, REDIS_CONF).with_context(|| format!("writing {}", conf.display()))?;
        let socket = dir.join(SOCKET);
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            bail!(
                "the managed Redis socket {} is longer than the {MAX_SOCKET_PATH} bytes a unix \
                 socket path may have; use a shorter --data-dir",
                socket.display()
            );
        }
        let url = socket_url(&socket)?;
        let launch = Launch {
            binary: binary.to_path_buf(),
            conf,
            dir,
            socket,
            url: url.clone(),
        };
        let mut child = launch.spawn().await?;
        tracing::info!(%url, "managed redis-server started");
        let stop = CancellationToken::new();
        let stopping = stop.clone();
        let supervisor = tokio::spawn(async move {
            loop {
                tokio::select! {
                    status = child.wait() => {
                        tracing::error!(?status, "managed redis-server exited; restarting");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        match launch.spawn().await {
                            Ok(c) => child = c,
                            Err(e) => {
                                tracing::error!(error = %e, "could not restart redis-server");
                                tokio::select! {
                                    _ = tokio::time::sleep(Duration::from_secs(2)) => continue,
                                    _ = stopping.cancelled() => return,
                                }
                            }
                        }
                    }
                    _ = stopping.cancelled() => {
                        terminate(&mut child).await;
                        return;
                    }
                }
            }
        });
        Ok(Self {
            url,
            stop,
            supervisor,
        })
    }

    /// The `unix://` URL clients connect with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stops the child and waits for it.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.supervisor.await;
    }
}

/// The file holding the managed redis-server's pid, in its dir.
const PIDFILE: &str = "managed.pid";

/// Stops a redis-server left running on `dir` by an earlier process (one that died
/// before its child got the signal, or from before children died with their parent):
/// two servers must never share one data dir. Only a redis-server whose working
/// directory is `dir` (Redis changes into its `--dir`) is stopped.
async fn stop_stale_instance(dir: &Path) {
    let Some(pid) = std::fs::read_to_string(dir.join(PIDFILE))
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
    else {
        return;
    };
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let is_redis = std::fs::read(proc.join("cmdline"))
        .is_ok_and(|c| String::from_utf8_lossy(&c).contains("redis-server"));
    let same_dir = std::fs::read_link(proc.join("cwd")).is_ok_and(|cwd| cwd == dir);
    if !(is_redis && same_dir) {
        return;
    }
    tracing::warn!(pid, dir = %dir.display(), "stopping a stale managed redis-server");
    // SAFETY: kill(2) on a pid just checked to be a redis-server serving our data dir.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    for _ in 0..100 {
        if !proc.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // SAFETY: as above.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

/// SIGTERM (Redis flushes its AOF and exits), SIGKILL if it takes more than 10 s.
async fn terminate(child: &mut Child) {
    if let Some(pid) = child.id() {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}
