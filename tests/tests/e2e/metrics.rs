//! Prometheus metrics (`record --metrics-addr`), read by real consumers:
//! Debian's Prometheus server scrapes the endpoint and its query API
//! answers with the exact bytes the fixtures hold; `promtool check
//! metrics` accepts the exposition. A bad address and a port in use fail
//! at once, in one line.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use mmap_trace_tests::{PAGE, Run, Tracing, Waiting, begin, fixture, mmap_trace, scratch_path};
use serde_json::Value;

/// How long Prometheus may take to start, scrape and answer.
const PATIENCE: Duration = Duration::from_secs(60);

/// A port nobody listens on now (the kernel's pick; free again at once).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("its address").port()
}

/// A plain HTTP/1.0 GET: (status code, headers, body).
fn http_get(addr: SocketAddr, target: &str, accept: Option<&str>) -> (u16, String, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    write!(
        stream,
        "GET {target} HTTP/1.0\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response: {response:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, head.to_owned(), body.to_owned())
}

/// `text` for a URL's query string.
fn percent_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Debian's Prometheus server on loopback, scraping one target every
/// second, with its storage in a scratch directory; killed and its
/// directory removed when dropped, whatever the test did.
struct Prometheus {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Prometheus {
    fn start(target: SocketAddr) -> Prometheus {
        let dir = scratch_path("prometheus");
        std::fs::create_dir_all(&dir).expect("the Prometheus directory");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: mmap-trace\n    static_configs:\n      \
                 - targets: ['{target}']\n"
            ),
        )
        .expect("write the Prometheus config");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let started = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match started {
            Ok(child) => child,
            Err(e) => {
                std::fs::remove_dir_all(&dir).ok();
                panic!("start prometheus ({e}): `cargo xtask setup` installs Debian's prometheus");
            }
        };
        Prometheus { child, dir, addr }
    }

    /// The result vector of an instant query, once Prometheus answers.
    fn query(&self, promql: &str) -> Vec<Value> {
        let target = format!("/api/v1/query?query={}", percent_encoded(promql));
        let started = Instant::now();
        loop {
            // Not listening yet while it starts: try again.
            if TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_ok() {
                let (status, _, body) = http_get(self.addr, &target, None);
                if status == 200 {
                    let answer: Value = serde_json::from_str(&body).expect("Prometheus's JSON");
                    assert_eq!(answer["status"], "success", "{answer}");
                    return answer["data"]["result"]
                        .as_array()
                        .expect("data.result[]")
                        .clone();
                }
            }
            assert!(
                started.elapsed() < PATIENCE,
                "Prometheus never answered {promql}"
            );
            thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits until `promql` gives one series whose value is `value`, and
    /// returns its labels.
    fn wait_for(&self, promql: &str, value: u64) -> Value {
        let started = Instant::now();
        loop {
            let result = self.query(promql);
            if let [series] = result.as_slice()
                && series["value"][1].as_str().and_then(|v| v.parse().ok()) == Some(value)
            {
                return series["metric"].clone();
            }
            assert!(
                started.elapsed() < PATIENCE,
                "{promql} never gave one series of {value}: {result:?}"
            );
            thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Err(e) = self.child.kill() {
            eprintln!("cannot kill prometheus: {e}");
        }
        if let Err(e) = self.child.wait() {
            eprintln!("cannot reap prometheus: {e}");
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("cannot remove {}: {e}", self.dir.display());
        }
    }
}

/// The value of the one sample line of `/metrics` that starts with
/// `series` (a name and labels, as far as given).
fn metric(body: &str, series: &str) -> f64 {
    let lines: Vec<&str> = body.lines().filter(|l| l.starts_with(series)).collect();
    let [line] = lines.as_slice() else {
        panic!("not one {series} line: {lines:?}");
    };
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// memfd maps 16 shared pages and touches 10; reserve sets 64 GiB aside
/// PROT_NONE and makes two 16 MiB chunks of it accessible. Prometheus sees
/// exactly that, per process and object.
#[test]
fn prometheus_scrapes_the_exact_bytes_each_process_holds() {
    let _e2e = begin();
    let mut shared = Waiting::start(&fixture("memfd"), &[] as &[&str]);
    let mut reserving = Waiting::start(&fixture("reserve"), &["2"]);
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let (shared_pid, reserving_pid) = (shared.pid().to_string(), reserving.pid().to_string());
    let tracing = Tracing::start(&[
        "--pid",
        &shared_pid,
        "--pid",
        &reserving_pid,
        "--interval",
        "200ms",
        "--min-window",
        "1s",
        "--metrics-addr",
        &metrics.to_string(),
    ]);
    shared.go();
    shared.expect_line("done");
    reserving.go();
    reserving.expect_line("done");

    let prometheus = Prometheus::start(metrics);
    let labels = prometheus.wait_for(
        r#"mmap_trace_live_bytes{role="issuer",object=~".*/memfd"}"#,
        16 * PAGE,
    );
    assert_eq!(labels["pid"], shared_pid.as_str(), "{labels}");
    assert_eq!(labels["comm"], "memfd", "{labels}");
    assert_eq!(labels["job"], "mmap-trace", "{labels}");
    prometheus.wait_for(
        r#"mmap_trace_resident_bytes{role="requester",object=~".*/memfd"}"#,
        10 * PAGE,
    );
    let chunks = 2 * (16 << 20);
    prometheus.wait_for(
        r#"mmap_trace_reserved_bytes{role="issuer",object=~".*/reserve"}"#,
        (64 << 30) - chunks,
    );
    prometheus.wait_for(
        r#"mmap_trace_resident_bytes{role="issuer",object=~".*/reserve"}"#,
        chunks,
    );
    prometheus.wait_for(r#"mmap_trace_events_total{call="mprotect"}"#, 2);
    prometheus.wait_for(r#"sum(mmap_trace_events_total)"#, 4);
    drop(prometheus);

    // The exposition as curl gets it (the classic text format), and as
    // Prometheus asks for it.
    let (status, head, body) = http_get(metrics, "/metrics", None);
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    let check = promtool_check(&body);
    assert!(check.status.success(), "promtool: {check:?}\n{body}");
    let rss = metric(
        &body,
        &format!(r#"mmap_trace_process_rss_bytes{{pid="{shared_pid}",comm="memfd"}}"#),
    );
    assert!(rss >= (10 * PAGE) as f64, "{rss}");
    assert_eq!(
        metric(&body, r#"mmap_trace_events_total{call="mmap"}"#),
        2.0
    );
    assert_eq!(metric(&body, "mmap_trace_lost_records_total"), 0.0);
    // The memfd's 10 resident pages never changed: a flat line. (Rates are
    // fitted every 10 s once --min-window is spanned.)
    let started = Instant::now();
    let flat = loop {
        let (_, _, body) = http_get(metrics, "/metrics", None);
        if let Some(line) = body.lines().find(|l| {
            l.starts_with("mmap_trace_growth_bytes_per_minute{role=\"issuer\"")
                && l.contains("/memfd\",basis=\"resident\"")
        }) {
            break line.to_owned();
        }
        assert!(started.elapsed() < PATIENCE, "no growth rate for memfd");
        thread::sleep(Duration::from_millis(500));
    };
    assert!(flat.ends_with(" 0.0"), "{flat}");

    let (status, head, body) = http_get(
        metrics,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0"),
    );
    assert_eq!(status, 200);
    assert!(
        head.contains("Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{head}"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert_eq!(http_get(metrics, "/", None).0, 404);

    tracing.interrupt();
    let report = tracing.finish().report();
    assert_eq!(report.u64("events.mmap"), 2);
    shared.finish();
    reserving.finish();
}

/// `promtool check metrics`, reading `exposition` on stdin.
fn promtool_check(exposition: &str) -> Run {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package)");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(exposition.as_bytes())
        .expect("feed promtool");
    mmap_trace_tests::wait_with_timeout(child)
}

fn assert_one_line_before_tracing(run: &Run, needle: &str) {
    assert_eq!(run.status.code(), Some(1), "stderr: {}", run.stderr);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr, got: {}", run.stderr);
    assert!(lines[0].starts_with("mmap-trace: "), "{}", lines[0]);
    assert!(lines[0].contains(needle), "{:?} lacks {needle:?}", lines[0]);
    assert!(run.stdout.is_empty(), "no report: {}", run.stdout);
}

#[test]
fn a_bad_metrics_address_fails_at_once() {
    let _e2e = begin();
    let run = mmap_trace(&["record", "--metrics-addr", "nonsense", "--", "true"]);
    assert_one_line_before_tracing(
        &run,
        r#"--metrics-addr "nonsense" is not HOST:PORT (e.g. 127.0.0.1:9464"#,
    );
    let run = mmap_trace(&["record", "--metrics-addr", "127.0.0.1:70000", "--", "true"]);
    assert_one_line_before_tracing(&run, "is not HOST:PORT");
}

#[test]
fn a_metrics_port_in_use_fails_at_once() {
    let _e2e = begin();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let run = mmap_trace(&["record", "--metrics-addr", &addr.to_string(), "--", "true"]);
    assert_one_line_before_tracing(
        &run,
        &format!(
            "cannot serve metrics on {addr} (--metrics-addr): Address already in use (os error 98)"
        ),
    );
}
