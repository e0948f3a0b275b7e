//! `record --metrics-addr`: the metrics a [`MetricsRecorder`] keeps, served
//! at `/metrics` on the session's own event loop (a current-thread tokio
//! runtime: a scrape and a sample never interleave).
//!
//! A minimal HTTP/1.1 responder is all a scraper needs: one request per
//! connection (`Connection: close`), `GET` or `HEAD /metrics`, 404 for
//! other paths, 405 for other methods. OpenMetrics when the request's
//! `Accept` names it (Prometheus does), the classic text format otherwise
//! (curl, promtool).

use std::{
    future::Future,
    io,
    net::{SocketAddr, TcpListener, ToSocketAddrs as _},
    time::Duration,
};

use anyhow::{Context as _, anyhow};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    task::JoinHandle,
};

use super::cli::RecordArgs;
use crate::{
    report::metrics::{Exposition, ExpositionFormat, KernelLost, MetricsConfig, MetricsRecorder},
    sys::loader::Tracer,
};

/// The longest request head read (a scraper's is a few hundred bytes).
const MAX_HEAD: usize = 8 * 1024;

/// How long a client has to send its request and take the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Parses `HOST:PORT` (`127.0.0.1:9464`, `[::]:9464`, `localhost:9464`)
/// and listens there: done before anything is traced, so a bad address or
/// a port in use fails at once.
pub fn bind(text: &str) -> anyhow::Result<TcpListener> {
    let addrs: Vec<SocketAddr> = match text.parse::<SocketAddr>() {
        Ok(addr) => vec![addr],
        Err(_) => {
            let (host, port) = text
                .rsplit_once(':')
                .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
                .filter(|(host, _)| !host.is_empty())
                .ok_or_else(|| {
                    anyhow!(
                        "--metrics-addr {text:?} is not HOST:PORT (e.g. 127.0.0.1:9464, \
                         0.0.0.0:9464)"
                    )
                })?;
            (host, port)
                .to_socket_addrs()
                .with_context(|| format!("--metrics-addr {text}: cannot resolve {host}"))?
                .collect()
        }
    };
    let mut failure = None;
    for addr in &addrs {
        match TcpListener::bind(addr) {
            Ok(listener) => return Ok(listener),
            Err(error) => failure = Some((addr, error)),
        }
    }
    match failure {
        Some((addr, error)) => {
            Err(error).with_context(|| format!("cannot serve metrics on {addr} (--metrics-addr)"))
        }
        None => Err(anyhow!("--metrics-addr {text}: no address found")),
    }
}

/// The metrics of one recording: what the session feeds, what follows the
/// kernel's count of lost records, and the server (stopped when dropped).
pub struct Metrics {
    recorder: MetricsRecorder,
    kernel_lost: KernelLost,
    serving: JoinHandle<()>,
}

impl Metrics {
    /// Serves the metrics on `listener`; call it within the event loop.
    pub fn start(listener: TcpListener, args: &RecordArgs) -> anyhow::Result<Metrics> {
        let addr = listener.local_addr().context("the metrics address")?;
        listener
            .set_nonblocking(true)
            .context("the metrics listener")?;
        let listener =
            tokio::net::TcpListener::from_std(listener).context("the metrics listener")?;
        let (recorder, exposition) = MetricsRecorder::new(MetricsConfig {
            top: args.metrics_top,
            judging: args.verdict.judging(),
        });
        let kernel_lost = recorder.kernel_lost();
        let serving = tokio::spawn(serve(listener, exposition));
        eprintln!("mmap-trace: metrics at http://{addr}/metrics");
        Ok(Metrics {
            recorder,
            kernel_lost,
            serving,
        })
    }

    /// The recorder (for the session) and the kernel's lost count (for
    /// [`alongside`]), borrowed apart.
    pub fn parts(&mut self) -> (&mut MetricsRecorder, &mut KernelLost) {
        (&mut self.recorder, &mut self.kernel_lost)
    }
}

impl Drop for Metrics {
    fn drop(&mut self) {
        self.serving.abort();
    }
}

/// Runs `session` to its end, reading the kernel's count of lost records
/// into the metrics every `every` meanwhile (the kernel keeps it; the
/// session hears only of records that did not decode).
pub async fn alongside<T>(
    session: impl Future<Output = T>,
    tracer: &Tracer,
    lost: Option<&mut KernelLost>,
    every: Duration,
) -> T {
    let Some(lost) = lost else {
        return session.await;
    };
    let mut session = std::pin::pin!(session);
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            end = &mut session => {
                lost.update(tracer.counters().lost_records);
                return end;
            }
            _ = tick.tick() => lost.update(tracer.counters().lost_records),
        }
    }
}

async fn serve(listener: tokio::net::TcpListener, exposition: Exposition) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let exposition = exposition.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(CLIENT_TIMEOUT, respond(stream, &exposition)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => log::debug!("metrics: {peer}: {error}"),
                        Err(_) => log::debug!("metrics: {peer}: timed out"),
                    }
                });
            }
            Err(error) => {
                // Out of descriptors, say: it may pass; do not spin.
                log::warn!("metrics: cannot accept a connection: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn respond(mut stream: TcpStream, exposition: &Exposition) -> io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buffer = [0u8; 1024];
    while !head_complete(&head) {
        if head.len() > MAX_HEAD {
            stream.write_all(&answer(Answer::BadRequest, None)).await?;
            return stream.shutdown().await;
        }
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            return Ok(()); // gone before asking
        }
        head.extend_from_slice(&buffer[..read]);
    }
    let response = match route(&head) {
        Answer::Metrics { format, head_only } => match exposition.encode(format) {
            Ok(body) => answer(Answer::Metrics { format, head_only }, Some(body.as_bytes())),
            Err(error) => {
                log::warn!("metrics: {error}");
                answer(Answer::Failed, None)
            }
        },
        other => answer(other, None),
    };
    stream.write_all(&response).await?;
    stream.shutdown().await
}

/// Has the request head ended (an empty line)?
fn head_complete(head: &[u8]) -> bool {
    head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n")
}

/// What a request gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Metrics {
        format: ExpositionFormat,
        /// HEAD: the headers alone.
        head_only: bool,
    },
    NotFound,
    MethodNotAllowed,
    BadRequest,
    Failed,
}

/// What the request `head` asks for.
fn route(head: &[u8]) -> Answer {
    let Ok(head) = std::str::from_utf8(head) else {
        return Answer::BadRequest;
    };
    let mut lines = head.lines();
    let mut request = lines.next().unwrap_or_default().split(' ');
    let (Some(method), Some(target), Some(version), None) = (
        request.next(),
        request.next(),
        request.next(),
        request.next(),
    ) else {
        return Answer::BadRequest;
    };
    if !version.starts_with("HTTP/1.") {
        return Answer::BadRequest;
    }
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    if path != "/metrics" {
        return Answer::NotFound;
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Answer::MethodNotAllowed,
    };
    let accept = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("accept").then(|| value.trim())
    });
    Answer::Metrics {
        format: ExpositionFormat::for_accept(accept),
        head_only,
    }
}

/// The response to `answer`, with `body` for metrics.
fn answer(answer: Answer, body: Option<&[u8]>) -> Vec<u8> {
    let (status, content_type, extra, body): (&str, &str, &str, &[u8]) = match answer {
        Answer::Metrics { format, .. } => (
            "200 OK",
            format.content_type(),
            "",
            body.unwrap_or_default(),
        ),
        Answer::NotFound => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "",
            b"mmap-trace serves its metrics at /metrics\n",
        ),
        Answer::MethodNotAllowed => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "Allow: GET, HEAD\r\n",
            b"GET /metrics\n",
        ),
        Answer::BadRequest => (
            "400 Bad Request",
            "text/plain; charset=utf-8",
            "",
            b"bad request\n",
        ),
        Answer::Failed => (
            "500 Internal Server Error",
            "text/plain; charset=utf-8",
            "",
            b"cannot encode the metrics\n",
        ),
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         {extra}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !matches!(
        answer,
        Answer::Metrics {
            head_only: true,
            ..
        }
    ) {
        response.extend_from_slice(body);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_routed() {
        let prometheus = b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n\r\n";
        assert_eq!(
            route(prometheus),
            Answer::Metrics {
                format: ExpositionFormat::OpenMetrics,
                head_only: false
            }
        );
        assert_eq!(
            route(b"HEAD /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Answer::Metrics {
                format: ExpositionFormat::Text,
                head_only: true
            }
        );
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Answer::NotFound);
        assert_eq!(
            route(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Answer::MethodNotAllowed
        );
        assert_eq!(route(b"hello\r\n\r\n"), Answer::BadRequest);
        assert_eq!(route(b"GET /metrics SMTP\r\n\r\n"), Answer::BadRequest);
        assert_eq!(route(&[0xff, b'\n', b'\n']), Answer::BadRequest);
    }

    #[test]
    fn responses_have_their_length_and_close() {
        let ok = answer(
            Answer::Metrics {
                format: ExpositionFormat::Text,
                head_only: false,
            },
            Some(b"m 1\n"),
        );
        assert_eq!(
            String::from_utf8(ok).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
             Content-Length: 4\r\nConnection: close\r\n\r\nm 1\n"
        );
        let head = answer(
            Answer::Metrics {
                format: ExpositionFormat::Text,
                head_only: true,
            },
            Some(b"m 1\n"),
        );
        assert!(
            String::from_utf8(head)
                .unwrap()
                .ends_with("Content-Length: 4\r\nConnection: close\r\n\r\n")
        );
        let not_found = String::from_utf8(answer(Answer::NotFound, None)).unwrap();
        assert!(
            not_found.starts_with("HTTP/1.1 404 Not Found\r\n"),
            "{not_found}"
        );
        assert!(head_complete(b"GET / HTTP/1.1\r\n\r\n"));
        assert!(!head_complete(b"GET / HTTP/1.1\r\nHost: x\r\n"));
    }

    #[test]
    fn the_flags_parse_with_their_default() {
        use clap::Parser as _;

        use crate::app::cli::{Cli, Command};
        let record = |extra: &[&str]| {
            let argv = ["mmap-trace", "record", "--cgroup", "x"];
            let cli = Cli::try_parse_from(argv.iter().chain(extra)).unwrap();
            let Command::Record(args) = cli.command else {
                panic!("not record")
            };
            (args.metrics_addr, args.metrics_top)
        };
        assert_eq!(record(&[]), (None, 50));
        assert_eq!(
            record(&["--metrics-addr", "0.0.0.0:9464", "--metrics-top", "5"]),
            (Some("0.0.0.0:9464".to_owned()), 5)
        );
    }

    #[test]
    fn addresses_are_host_and_port() {
        let error = bind("nonsense").unwrap_err().to_string();
        assert!(error.contains("is not HOST:PORT"), "{error}");
        assert!(bind(":9464").is_err());
        assert!(bind("127.0.0.1:99999").is_err());
        let listener = bind("127.0.0.1:0").unwrap();
        let taken = listener.local_addr().unwrap();
        let error = format!("{:#}", bind(&taken.to_string()).unwrap_err());
        assert!(error.contains("cannot serve metrics on"), "{error}");
        assert!(error.contains("in use"), "{error}");
        assert!(bind("localhost:0").is_ok());
    }
}
