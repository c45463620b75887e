//! Containment of misbehaving output, input and environment use (continued from
//! `containment.rs`): floods, early close, bad lines, slow readers, stderr, secrets,
//! network.

use super::*;

#[tokio::test]
async fn a_stdout_flood_is_stopped_at_max_output() {
    let neighbour = Neighbour::start().await;
    let dir = job_dir();
    let mut spec = sh(&format!(
        "{} echo $$ $(readlink /proc/$$/ns/pid) > $OUT/pid; exec yes '{{\"a\":1}}'",
        escapee()
    ));
    spec.max_output = 1 << 20;
    let mut runner = test_runner("stdout-flood", dir.path(), &spec);
    let error = runner.invoke(&batch(&["{}"])).await.unwrap_err();
    assert!(
        matches!(error, InvokeError::OutputTooLarge { limit } if limit == 1 << 20),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("more than 1048576 bytes"),
        "{error}"
    );
    assert_all_gone(dir.path(), "pid").await;
    assert_all_gone(dir.path(), "escaped.pid").await;
    assert_no_cgroups("stdout-flood", runner);
    neighbour.assert_unaffected().await;
}

#[tokio::test]
async fn closing_stdout_early_fails_the_batch_instead_of_hanging() {
    let neighbour = Neighbour::start().await;
    let dir = job_dir();

    // Exec mode: output is complete at end of file, but the process must exit too; it is
    // waited for until the timeout, then killed.
    let mut exec = sh(
        "exec 1>&-; echo $$ $(readlink /proc/$$/ns/pid) > $OUT/pid; cat >/dev/null; exec sleep 1000",
    );
    exec.timeout = Duration::from_secs(1);
    let mut runner = test_runner("closes-stdout", dir.path(), &exec);
    let error = runner.invoke(&batch(&["{}"])).await.unwrap_err();
    assert!(matches!(error, InvokeError::Timeout { .. }), "{error:?}");
    assert_all_gone(dir.path(), "pid").await;
    assert_no_cgroups("closes-stdout", runner);

    // Stream mode: end of file before the answer means the instance is done for; it is
    // killed after a short wait for its exit status, long before the timeout.
    let stream = spec(
        &[
            "sh",
            "-c",
            "exec 1>&-; echo $$ $(readlink /proc/$$/ns/pid) > $OUT/pid; exec sleep 1000",
        ],
        FunctionMode::Stream,
    );
    let mut runner = test_runner("closes-stdout", dir.path(), &stream);
    let started = Instant::now();
    let error = runner.invoke(&batch(&["{}"])).await.unwrap_err();
    match &error {
        InvokeError::Protocol { reason, .. } => {
            assert!(reason.contains("closed stdout"), "{reason}");
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(runner.warm_instance(), None);
    assert_all_gone(dir.path(), "pid").await;
    assert_no_cgroups("closes-stdout", runner);
    neighbour.assert_unaffected().await;
}

#[tokio::test]
async fn invalid_output_lines_fail_the_batch_naming_the_line() {
    let neighbour = Neighbour::start().await;
    let dir = job_dir();

    // Not an object at all: a protocol error at the line, at once.
    let not_json = sh(r#"cat >/dev/null; echo '{"a": 1}'; echo 'Traceback: oops'"#);
    let mut runner = test_runner("bad-lines", dir.path(), &not_json);
    match runner.invoke(&batch(&["{}"])).await {
        Err(InvokeError::Protocol { line: 2, reason }) => {
            assert!(reason.contains("Traceback: oops"), "{reason}");
        }
        other => panic!("expected a protocol error at line 2, got {other:?}"),
    }
    assert_no_cgroups("bad-lines", runner);

    // Starts like an object but is not JSON: passed through, and the decoder fails the
    // batch naming the row.
    let broken = sh(r#"cat >/dev/null; echo '{"a": 1}'; echo '{"a": oops}'"#);
    let mut runner = test_runner("bad-lines", dir.path(), &broken);
    let output = runner.invoke(&batch(&["{}"])).await.unwrap();
    assert_eq!(output.row_count, 2);
    let schema =
        crate::output::schema::OutputSchema::from_declarations(&[("a".into(), "int64".into())])
            .unwrap();
    let error =
        crate::output::decode::decode_rows(&schema, &output.rows, output.row_count).unwrap_err();
    assert_eq!(error.row, 1, "{error}");
    assert!(error.to_string().starts_with("output row 1"), "{error}");
    assert_no_cgroups("bad-lines", runner);
    neighbour.assert_unaffected().await;
}

#[tokio::test]
async fn stream_output_out_of_place_is_a_protocol_error() {
    let neighbour = Neighbour::start().await;
    let dir = job_dir();
    let cases = [
        // A log line on stdout before `$ready`.
        (
            "import sys\nprint('loading model', flush=True)\nprint('{\"$ready\": true}', flush=True)\nsys.stdin.readline()",
            1,
            "found `loading model`",
        ),
        // A data row before `$ready`.
        (
            "import sys\nprint('{\"early\": 1}\\n{\"$ready\": true}', flush=True)\nsys.stdin.readline()",
            2,
            "`$ready` may only be the first line",
        ),
    ];
    for (script, line, expected) in cases {
        let spec = spec(&["python3", "-c", script], FunctionMode::Stream);
        let mut runner = test_runner("out-of-place", dir.path(), &spec);
        match runner.invoke(&batch(&["{}"])).await {
            Err(InvokeError::Protocol { line: at, reason }) => {
                assert_eq!(at, line, "{reason}");
                assert!(reason.contains(expected), "{reason}");
            }
            other => panic!("expected a protocol error, got {other:?}"),
        }
        assert_eq!(runner.warm_instance(), None);
        assert_no_cgroups("out-of-place", runner);
    }

    // An answer followed by a second empty line: the extra line would be taken as the
    // next batch's (empty) answer, so the next batch fails instead and gets a new instance.
    let double = r#"
import os, sys
for line in sys.stdin:
    if line == "\n":
        tag = "%d %s" % (os.getpid(), os.readlink("/proc/self/ns/pid"))
        sys.stdout.write('{"pid": "%s"}\n\n\n' % tag)
        sys.stdout.flush()
"#;
    let spec = spec(&["python3", "-c", double], FunctionMode::Stream);
    let mut runner = test_runner("out-of-place", dir.path(), &spec);
    let first = runner.invoke(&batch(&["{}"])).await.unwrap();
    let pid = process_of(&rows(&first)[0]["pid"]);
    // The stray line may reach the pipe a moment after the answer; wait for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let error = loop {
        match runner.invoke(&batch(&["{}"])).await {
            Err(error) => break error,
            Ok(output) => {
                assert!(
                    Instant::now() < deadline,
                    "stray output never noticed: {output:?}"
                );
            }
        }
    };
    assert!(
        error
            .to_string()
            .contains("after the empty line that ended its previous answer"),
        "{error}"
    );
    assert_gone(pid).await;
    assert_no_cgroups("out-of-place", runner);
    neighbour.assert_unaffected().await;
}

/// Reads stdin one line at a time, pausing every 100 lines, echoing each line.
const SLOW_READER: &str = r#"
import sys, time
for index, line in enumerate(sys.stdin):
    if index % 100 == 0:
        time.sleep(0.01)
    sys.stdout.write(line)
"#;

#[tokio::test]
async fn a_slow_reader_gets_a_large_batch_without_deadlock() {
    let neighbour = Neighbour::start().await;
    let dir = job_dir();
    let record = format!("{{\"pad\":\"{}\"}}", "p".repeat(1000));
    let count = 8000;
    let input = EncodedBatch {
        bytes: format!("{record}\n").repeat(count).into_bytes(),
        records: count,
    };
    let mut spec = spec(&["python3", "-c", SLOW_READER], FunctionMode::Exec);
    let mut runner = test_runner("slow-reader", dir.path(), &spec);
    let output = runner.invoke(&input).await.unwrap();
    assert_eq!(output.row_count, count);
    assert!(output.rows == input.bytes, "every line came back");
    assert!(
        output.duration >= Duration::from_millis(800),
        "the reader was slow: {:?}",
        output.duration
    );
    assert_no_cgroups("slow-reader", runner);

    // Slower than the timeout: a timeout, not a hang.
    spec.timeout = Duration::from_millis(300);
    let mut runner = test_runner("slow-reader", dir.path(), &spec);
    let error = runner.invoke(&input).await.unwrap_err();
    assert!(matches!(error, InvokeError::Timeout { .. }), "{error:?}");
    assert_no_cgroups("slow-reader", runner);
    neighbour.assert_unaffected().await;
}

/// Counts the stderr log records of one job: lines logged, and the suppressed counts of
/// "… more lines suppressed" records.
#[derive(Default)]
struct StderrRecords {
    job: &'static str,
    lines: AtomicUsize,
    suppressed: std::sync::Mutex<Vec<u64>>,
}

#[derive(Default)]
struct Fields {
    job: Option<String>,
    suppressed: Option<u64>,
}

impl tracing::field::Visit for Fields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "job" {
            self.job = Some(value.to_owned());
        }
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        if field.name() == "suppressed" {
            self.suppressed = Some(value);
        }
    }

    fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
}

struct CountStderr(Arc<StderrRecords>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CountStderr {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() != "sluice::function" {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        if fields.job.as_deref() != Some(self.0.job) {
            return;
        }
        match fields.suppressed {
            Some(count) => self.0.suppressed.lock().unwrap().push(count),
            None => {
                self.0.lines.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[tokio::test]
async fn a_stderr_flood_is_drained_and_its_logging_capped() {
    use tracing_subscriber::layer::SubscriberExt as _;

    let records = Arc::new(StderrRecords {
        job: "stderr-flood",
        ..StderrRecords::default()
    });
    // This test's runtime runs every task on this thread, so a thread-local subscriber
    // sees the stderr reader's records.
    let _subscriber = tracing::subscriber::set_default(
        tracing_subscriber::registry().with(CountStderr(Arc::clone(&records))),
    );
    let neighbour = Neighbour::start().await;
    let dir = job_dir();
    // 50 MB of stderr in 100-byte lines, as fast as Python writes, then the answer.
    let flood = "import sys\nsys.stdin.read()\nline = 'e' * 99 + '\\n'\nfor _ in range(50):\n    sys.stderr.write(line * 10000)\nsys.stderr.flush()\nprint('{\"done\": true}')";
    let spec = spec(&["python3", "-c", flood], FunctionMode::Exec);
    let mut runner = test_runner("stderr-flood", dir.path(), &spec);
    let output = runner.invoke(&batch(&["{}"])).await.unwrap();
    assert_eq!(output.rows, b"{\"done\": true}\n");

    // The reader task reports the suppressed count when stderr closes; wait for it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let seen = || -> u64 {
        let suppressed: u64 = records.suppressed.lock().unwrap().iter().sum();
        suppressed + records.lines.load(Ordering::Relaxed) as u64
    };
    while seen() < 500_000 {
        assert!(Instant::now() < deadline, "stderr was not fully read");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let logged = records.lines.load(Ordering::Relaxed);
    assert!(
        logged <= stderr::MAX_LOGGED_LINES_PER_BATCH,
        "{logged} lines logged"
    );
    let suppressed = records.suppressed.lock().unwrap().clone();
    assert!(
        !suppressed.is_empty(),
        "a suppressed-lines record was logged"
    );
    assert_eq!(logged as u64 + suppressed.iter().sum::<u64>(), 500_000);
    assert_no_cgroups("stderr-flood", runner);
    neighbour.assert_unaffected().await;
}

#[tokio::test]
async fn a_function_cannot_read_the_platform_environment() {
    harden_platform_process().unwrap();
    // SAFETY: edition 2024 marks `set_var` unsafe because C code in other threads may
    // read the environment at the same time; the name is unique to this test, and Rust
    // code reading the environment takes std's environment lock.
    unsafe { std::env::set_var("SLUICE_TEST_PLATFORM_SECRET", "platform-secret-value") };
    // `/proc/<pid>/environ` shows the environment a process started with, so the
    // variables this test process started with stand for the platform's secrets.
    let own = std::fs::read("/proc/self/environ").unwrap();
    let secrets: Vec<String> = own
        .split(|&byte| byte == 0)
        .filter_map(|entry| std::str::from_utf8(entry).ok())
        .filter(|entry| {
            let name = entry.split('=').next().unwrap_or("");
            !["PATH", "HOME", "LANG"].contains(&name) && entry.len() > name.len() + 4
        })
        .map(str::to_owned)
        .collect();

    let neighbour = Neighbour::start().await;
    let dir = job_dir();
    let snoop = sh(r#"cat >/dev/null
{ env; echo "--- ppid $PPID"; cat /proc/$PPID/environ; echo "ppid_status=$?"
  echo "--- pid 1"; cat /proc/1/environ; echo "init_status=$?"; } > $OUT/seen.txt 2>&1
echo '{}'"#);
    let mut runner = test_runner("snoop", dir.path(), &snoop);
    runner.invoke(&batch(&["{}"])).await.unwrap();
    let seen = std::fs::read_to_string(dir.path().join("seen.txt")).unwrap();
    assert!(!seen.contains("platform-secret-value"), "{seen}");
    for secret in &secrets {
        assert!(!seen.contains(secret.as_str()), "leaked {secret}: {seen}");
    }
    assert!(
        seen.contains("ppid_status=1"),
        "reading the platform's environ failed: {seen}"
    );
    // Refused, or not even visible in the function's own /proc.
    assert!(
        seen.contains("Permission denied") || seen.contains("No such file"),
        "{seen}"
    );

    // Control: a process that keeps root's capabilities reads it despite the hardening;
    // dropping the function's capabilities is what stops it.
    if isolation::isolation().drop_capabilities.is_some() {
        let control = std::process::Command::new("cat")
            .arg(format!("/proc/{}/environ", std::process::id()))
            .output()
            .unwrap();
        assert!(control.status.success(), "root with capabilities reads it");
    }
    assert_no_cgroups("snoop", runner);
    neighbour.assert_unaffected().await;
}

/// Connects to `port` on the platform's loopback, lists interfaces, and checks its own
/// loopback works.
const NETWORK_PROBE: &str = r#"
import json, socket, sys
sys.stdin.read()
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5).close()
    platform = "reached"
except OSError as error:
    platform = type(error).__name__
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen()
socket.create_connection(server.getsockname(), timeout=5).close()
interfaces = sorted(name for _, name in socket.if_nameindex())
print(json.dumps({"platform": platform, "interfaces": interfaces, "own_loopback": "works"}))
"#;

#[tokio::test]
async fn the_network_is_off_unless_the_job_allows_it() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let dir = job_dir();
    let isolated = isolation::isolation().network_namespaces;
    for network in [false, true] {
        let mut spec = spec(&["python3", "-c", NETWORK_PROBE, &port], FunctionMode::Exec);
        spec.network = network;
        let mut runner = test_runner("network", dir.path(), &spec);
        let output = runner.invoke(&batch(&["{}"])).await.unwrap();
        let row = rows(&output).remove(0);
        assert_eq!(row["own_loopback"], "works");
        if !network && isolated {
            assert_eq!(row["platform"], "ConnectionRefusedError", "{row}");
            assert_eq!(row["interfaces"], serde_json::json!(["lo"]), "{row}");
        } else {
            assert_eq!(row["platform"], "reached", "{row}");
        }
        assert_no_cgroups("network", runner);
    }
}

/// Lists the descriptors open in the function (the listing's own one is closed by the
/// time each is checked).
const DESCRIPTOR_PROBE: &str = r#"
import json, os, sys
sys.stdin.read()
listed = [int(fd) for fd in os.listdir("/proc/self/fd")]
def is_open(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False
print(json.dumps({"open": sorted(fd for fd in listed if is_open(fd))}))
"#;

#[tokio::test]
async fn a_function_inherits_no_descriptor_but_its_pipes() {
    // A descriptor the platform holds without close-on-exec, as one inherited from a
    // supervisor would be: a file the function must not reach.
    let dir = job_dir();
    let secret = dir.path().join("platform-only");
    std::fs::write(&secret, "platform-secret-value").unwrap();
    let held = std::fs::File::open(&secret).unwrap();
    // SAFETY: `dup` of a descriptor this frame owns; the copy is owned right away.
    let inheritable = unsafe {
        use std::os::fd::{AsRawFd as _, FromRawFd as _};
        std::os::fd::OwnedFd::from_raw_fd(nix::libc::dup(held.as_raw_fd()))
    };
    // SAFETY: a plain fcntl on a descriptor owned above.
    let flags = unsafe {
        use std::os::fd::AsRawFd as _;
        nix::libc::fcntl(inheritable.as_raw_fd(), nix::libc::F_GETFD)
    };
    assert_eq!(flags & nix::libc::FD_CLOEXEC, 0, "dup clears close-on-exec");

    let probe = spec(&["python3", "-c", DESCRIPTOR_PROBE], FunctionMode::Exec);
    let mut runner = test_runner("descriptors", dir.path(), &probe);
    let output = runner.invoke(&batch(&["{}"])).await.unwrap();
    let row = rows(&output).remove(0);
    assert_eq!(row["open"], serde_json::json!([0, 1, 2]), "{row}");
    assert_no_cgroups("descriptors", runner);
    drop(inheritable);
}
