//! One control-plane process: started in its own process group with its output in a log file,
//! killed (with everything it started) when dropped.

use std::fs::File;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};

use crate::Error;

pub struct Component {
    pub name: String,
    pub log: PathBuf,
    child: Child,
}

impl Component {
    pub fn spawn(name: &str, bin: &Path, args: &[String], log: &Path) -> Result<Self, Error> {
        let out = File::create(log).map_err(|e| Error::io(log, e))?;
        let err = out.try_clone().map_err(|e| Error::io(log, e))?;
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        set_parent_death_signal(&mut cmd);
        let child = cmd.spawn().map_err(|e| Error::Start {
            component: name.to_string(),
            reason: format!("cannot execute {}: {e}", bin.display()),
            log: log.to_path_buf(),
            tail: String::new(),
        })?;
        Ok(Component {
            name: name.to_string(),
            log: log.to_path_buf(),
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last `lines` lines of the log.
    pub fn tail(&self, lines: usize) -> String {
        tail_file(&self.log, lines)
    }

    /// Stops the whole process group and reaps the child.
    pub fn stop(&mut self) {
        let _ = self.kill();
    }

    /// `kill -9` on the whole process group: no handler runs, nothing is cleaned up. Returns how
    /// the process ended (`None` if it could not be reaped).
    pub fn kill(&mut self) -> Option<ExitStatus> {
        if let Some(status) = self.exited() {
            return Some(status);
        }
        signal_group(self.child.id(), libc::SIGKILL);
        self.child.wait().ok()
    }

    /// Asks for a clean stop (SIGTERM), then kills after `grace`.
    pub fn terminate(&mut self, grace: std::time::Duration) {
        if self.exited().is_some() {
            return;
        }
        signal_group(self.child.id(), libc::SIGTERM);
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        self.stop();
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `cmd` to completion with `stdin` as its input (fed from a thread, so a large output
/// never blocks the input), capturing stdout and stderr. Any exit status is returned as is.
pub fn run_with_input(cmd: &mut Command, stdin: Option<&str>) -> Result<Output, Error> {
    let what = format!("{cmd:?}");
    let io = |e: std::io::Error| Error::Start {
        component: what.clone(),
        reason: e.to_string(),
        log: PathBuf::new(),
        tail: String::new(),
    };
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(io)?;
    let feeder = match (stdin, child.stdin.take()) {
        (Some(text), Some(mut pipe)) => {
            let text = text.to_owned();
            Some(std::thread::spawn(move || pipe.write_all(text.as_bytes())))
        }
        _ => None,
    };
    let out = child.wait_with_output().map_err(io)?;
    if let Some(feeder) = feeder {
        feeder
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("stdin thread panicked")))
            .map_err(io)?;
    }
    Ok(out)
}

pub fn tail_file(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub(crate) fn signal_group(pid: u32, signal: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // The child leads its own process group (process_group(0)), so -pid reaches it and
        // anything it started.
        #[allow(unsafe_code)]
        // SAFETY: kill(2) has no memory effects; a stale pid only yields ESRCH.
        unsafe {
            libc::kill(-pid, signal);
        }
    }
}

/// Components die with the process that started them, even when a test binary is killed with
/// SIGKILL and no destructor runs.
fn set_parent_death_signal(cmd: &mut Command) {
    #[allow(unsafe_code)]
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// `curl -k` on `url` (the servers under test self-issue their certificates), with a bearer
/// token if given: the HTTP status (0 when nothing answered) and the body.
pub async fn curl_insecure(url: &str, bearer: Option<&str>) -> Result<(u16, String), Error> {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-sk", "--max-time", "20", "-w", "\n%{http_code}"]);
    if let Some(token) = bearer {
        cmd.arg("-H").arg(format!("Authorization: Bearer {token}"));
    }
    let out = cmd.arg(url).output().await.map_err(|e| Error::Start {
        component: format!("curl {url}"),
        reason: e.to_string(),
        log: PathBuf::new(),
        tail: String::new(),
    })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
    Ok((code.trim().parse().unwrap_or(0), body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.log");
        std::fs::write(&path, "a\nb\nc\nd\n").expect("write");
        let cases = [(2, "c\nd"), (10, "a\nb\nc\nd"), (0, "")];
        for (n, want) in cases {
            assert_eq!(tail_file(&path, n), want, "tail {n}");
        }
        assert_eq!(tail_file(&dir.path().join("missing"), 3), "");
    }

    #[test]
    fn kill_ends_the_process_with_sigkill() {
        use std::os::unix::process::ExitStatusExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("sleep.log");
        let mut comp = Component::spawn("sleep", Path::new("/bin/sleep"), &["30".into()], &log)
            .expect("spawn");
        let status = comp.kill().expect("reaped");
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
        assert_eq!(comp.kill().and_then(|s| s.signal()), Some(libc::SIGKILL));
    }

    #[test]
    fn run_with_input_feeds_stdin_and_keeps_the_status() {
        let big = "x".repeat(1 << 20);
        let out = run_with_input(&mut Command::new("/bin/cat"), Some(&big)).expect("cat");
        assert!(out.status.success());
        assert_eq!(
            out.stdout.len(),
            big.len(),
            "all of a large input came back"
        );
        let out = run_with_input(&mut Command::new("/bin/false"), None).expect("false");
        assert!(!out.status.success());
        assert!(run_with_input(&mut Command::new("/nonexistent/x"), None).is_err());
    }

    #[test]
    fn dropping_a_component_kills_its_process() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("sleep.log");
        let comp = Component::spawn("sleep", Path::new("/bin/sleep"), &["30".into()], &log)
            .expect("spawn");
        let pid = comp.pid();
        drop(comp);
        let alive = Path::new(&format!("/proc/{pid}")).exists();
        assert!(!alive, "process {pid} still exists after drop");
    }
}
