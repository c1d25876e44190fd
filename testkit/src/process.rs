//! A machine's service restarted exactly as it was started, for the fault
//! suite (which runs alone): its command line, environment, directory,
//! user and output files, read from `/proc` while it runs.
//!
//! Not for a process that rewrites its own command line (Redis names
//! itself `redis-server 127.0.0.1:6379` over its arguments and environment).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a signalled process has to end.
const STOPPING: Duration = Duration::from_secs(60);

/// A running process and how it was started.
#[derive(Clone)]
pub struct Started {
    pub pid: u32,
    /// Its arguments, the program first.
    pub command: Vec<String>,
    environment: Vec<(String, String)>,
    directory: PathBuf,
    /// Its real user and group ids.
    user: Option<(u32, u32)>,
    /// Where its standard output and error went, where those are files.
    stdout: Option<PathBuf>,
    stderr: Option<PathBuf>,
}

/// A NUL-separated `/proc` file's parts.
fn parts(bytes: Vec<u8>) -> Vec<String> {
    bytes
        .split(|b| *b == 0)
        .filter(|part| !part.is_empty())
        .map(|part| String::from_utf8_lossy(part).into_owned())
        .collect()
}

/// The real user and group ids in a `/proc/<pid>/status`.
fn ids(status: &str) -> Option<(u32, u32)> {
    let real = |field: &str| -> Option<u32> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some((real("Uid:")?, real("Gid:")?))
}

/// Whether `pid` runs (a zombie nobody reaped has ended).
pub(crate) fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // `pid (name) state ...`: the name may hold spaces and parentheses.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

impl Started {
    /// The running process whose program (its first argument) ends with
    /// `program`, e.g. `nats-server` for `/usr/sbin/nats-server`.
    pub fn find(program: &str) -> Option<Self> {
        let pid = std::fs::read_dir("/proc")
            .ok()?
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok()?.parse::<u32>().ok())
            .filter(|pid| alive(*pid))
            .find(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|line| {
                    line.split(|b| *b == 0)
                        .next()
                        .is_some_and(|arg| arg.ends_with(program.as_bytes()))
                })
            })?;
        Self::of(pid)
    }

    /// How `pid` was started.
    pub fn of(pid: u32) -> Option<Self> {
        let command = parts(std::fs::read(format!("/proc/{pid}/cmdline")).ok()?);
        if command.is_empty() {
            return None;
        }
        let environment = parts(std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default())
            .into_iter()
            .filter_map(|pair| pair.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect();
        let file = |fd: u32| {
            std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
                .ok()
                .filter(|path| path.is_file())
        };
        Some(Self {
            pid,
            command,
            environment,
            directory: std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?,
            user: std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|status| ids(&status)),
            stdout: file(1),
            stderr: file(2),
        })
    }

    /// Sends `signal` (`KILL`, `TERM`...) and waits until the process has ended.
    pub async fn stop(&self, signal: &str) {
        let pid = self.pid.to_string();
        let status = std::process::Command::new("kill")
            .args(["-s", signal, &pid])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -s {signal} {pid}: {status}");
        let deadline = Instant::now() + STOPPING;
        while alive(self.pid) {
            assert!(
                Instant::now() < deadline,
                "{} (pid {pid}) still runs {STOPPING:?} after SIG{signal}",
                self.command[0]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts the process again as it was started, in a process group of
    /// its own: it outlives the test, as the one it replaces. Returns its pid.
    pub fn start(&self) -> u32 {
        use std::os::unix::process::CommandExt;
        let output = |path: &Option<PathBuf>| match path {
            Some(path) => std::fs::OpenOptions::new()
                .append(true)
                .open(path)
                .map(std::process::Stdio::from)
                .unwrap_or_else(|_| std::process::Stdio::null()),
            None => std::process::Stdio::null(),
        };
        let mut command = std::process::Command::new(&self.command[0]);
        command
            .args(&self.command[1..])
            .env_clear()
            .envs(self.environment.iter().cloned())
            .current_dir(&self.directory)
            .stdin(std::process::Stdio::null())
            .stdout(output(&self.stdout))
            .stderr(output(&self.stderr))
            .process_group(0);
        let ours = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| ids(&status));
        if let Some((uid, gid)) = self.user.filter(|user| Some(*user) != ours) {
            command.uid(uid).gid(gid);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {:?} again: {e}", self.command));
        let pid = child.id();
        // Reaped if it ends while this process lives; it is not stopped with it.
        std::thread::spawn(move || child.wait());
        pid
    }

    /// Stops the process with `signal`, leaves it down for `down`, and
    /// starts it again as it was; returns the new one.
    pub async fn restart(&self, signal: &str, down: Duration) -> Started {
        self.stop(signal).await;
        tokio::time::sleep(down).await;
        Started {
            pid: self.start(),
            ..self.clone()
        }
    }

    /// Its working directory.
    pub fn directory(&self) -> &Path {
        &self.directory
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_real_ids_from_status() {
        let status = "Name:\tx\nUid:\t108\t108\t108\t108\nGid:\t112\t112\t112\t112\n";
        assert_eq!(super::ids(status), Some((108, 112)));
    }

    #[test]
    fn finds_itself_as_started() {
        let me = super::Started::of(std::process::id()).expect("this process");
        assert_eq!(me.directory(), std::env::current_dir().expect("cwd"));
        assert!(me.command[0].contains("bida_testkit"), "{:?}", me.command);
    }
}
