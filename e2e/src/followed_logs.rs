//! `kubectl logs -f` (or `kubectl attach`) from a test: every line it prints, with the moment it arrived, so a test
//! can measure how long a line written in ECI took to reach the client.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

pub struct FollowedLogs {
    child: Child,
    lines: Receiver<(Instant, String)>,
}

impl FollowedLogs {
    /// Starts `kubectl logs -f --tail=1 <pod>` in `namespace`.
    pub fn start(kubeconfig: &Path, namespace: &str, pod: &str) -> std::io::Result<Self> {
        Self::kubectl(
            kubeconfig,
            &["-n", namespace, "logs", "-f", "--tail=1", pod],
            &[],
        )
    }

    /// Starts `kubectl <args>` with `env` added, following what it prints (`kubectl attach`).
    pub fn kubectl(
        kubeconfig: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> std::io::Result<Self> {
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("kubectl has no stdout"))?;
        let (sender, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send((Instant::now(), line)).is_err() {
                    return;
                }
            }
        });
        Ok(Self { child, lines })
    }

    /// The next line, if one comes within `timeout`.
    pub fn next_within(&self, timeout: Duration) -> Option<(Instant, String)> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// When `wanted` arrived, if it did with no more than `gap` between lines.
    pub fn arrival_of(&self, wanted: &str, gap: Duration) -> Option<Instant> {
        loop {
            let (at, line) = self.next_within(gap)?;
            if line == wanted {
                return Some(at);
            }
        }
    }
}

impl Drop for FollowedLogs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
