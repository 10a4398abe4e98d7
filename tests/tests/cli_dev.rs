//! `strait dev` runs real brokers in the foreground, stops them cleanly on Ctrl-C, and
//! brings the same cluster back from the same data directory.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use strait_tests::{binary, wait_until};

struct Dev {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Dev {
    fn start(dir: &std::path::Path, base_port: u16) -> anyhow::Result<Dev> {
        let mut child = Command::new(binary("strait"))
            .args(["dev", "--data-dir"])
            .arg(dir)
            .args(["--base-port", &base_port.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting strait dev")?;
        let stdout = child.stdout.take().context("piped stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Ok(Dev { child, lines })
    }

    fn wait_for_line(&self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Ok(()),
                Ok(_) => {}
                Err(_) => bail!("`strait dev` did not print {needle:?} within {timeout:?}"),
            }
        }
    }

    /// Ctrl-C, then wait (bounded) for a clean exit.
    fn interrupt(mut self) -> anyhow::Result<std::process::ExitStatus> {
        // SAFETY: kill(2) on our own child's pid with a valid signal.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("`strait dev` did not stop within 30 s of Ctrl-C");
            }
            let _ = self.lines.recv_timeout(Duration::from_millis(100));
        }
    }
}

impl Drop for Dev {
    /// A failed test still stops `strait dev` (and so its brokers) the clean way.
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        // SAFETY: kill(2) on our own child's pid with a valid signal.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            let _ = self.lines.recv_timeout(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn strait(brokers: &str, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
    let mut child = Command::new(binary("strait"))
        .args(["--brokers", brokers])
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "strait {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_cluster_stops_cleanly_and_comes_back_with_its_data() -> anyhow::Result<()> {
    let _lock = strait_tests::cluster_lock();
    let dir = tempfile::tempdir()?;
    let base = strait_tests::free_ports(3);
    let brokers = (0..3)
        .map(|i| format!("127.0.0.1:{}", base + i))
        .collect::<Vec<_>>()
        .join(",");

    let dev = Dev::start(dir.path(), base)?;
    dev.wait_for_line("press Ctrl-C", Duration::from_secs(90))?;
    strait(
        &brokers,
        &["topic", "create", "kept", "-p", "2", "-r", "3"],
        None,
    )?;
    let input: String = (0..50).map(|i| format!("line-{i}\n")).collect();
    strait(&brokers, &["topic", "produce", "kept"], Some(&input))?;
    let status = dev.interrupt()?;
    assert!(status.success(), "strait dev exited with {status}");
    // Every broker stopped: their ports are free again.
    for i in 0..3 {
        wait_until(
            "broker ports to be released",
            Duration::from_secs(10),
            || async move { TcpListener::bind(("127.0.0.1", base + i)).ok().map(|_| ()) },
        )
        .await?;
    }

    let dev = Dev::start(dir.path(), base)?;
    dev.wait_for_line("press Ctrl-C", Duration::from_secs(90))?;
    let out = strait(&brokers, &["topic", "consume", "kept", "--num", "50"], None)?;
    let mut values: Vec<&str> = out.lines().collect();
    values.sort_by_key(|v| {
        v.trim_start_matches("line-")
            .parse::<u32>()
            .unwrap_or(u32::MAX)
    });
    let expected: Vec<String> = (0..50).map(|i| format!("line-{i}")).collect();
    assert_eq!(values, expected);
    // Every replica reports in sync again once its followers acknowledged the new leaders.
    wait_until(
        "cluster status --check to pass",
        Duration::from_secs(30),
        || {
            let brokers = brokers.clone();
            async move {
                let check = Command::new(binary("strait"))
                    .args(["--brokers", &brokers, "cluster", "status", "--check"])
                    .output()
                    .ok()?;
                check.status.success().then_some(())
            }
        },
    )
    .await?;
    assert!(dev.interrupt()?.success());
    Ok(())
}
