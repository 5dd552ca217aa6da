//! Readers of big logs (issue 14, finding 4): slow readers of a 64 MiB log cost the server a window each, not
//! the log; `Range` reads part of it; live streams are capped; a client that sends its headers or its body too
//! slowly is cut off. A real `gantry up` and raw TCP clients that stop reading.

mod support;

use std::time::Duration;
use support::farm::Farm;
use support::{eventually, run};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn rss(pid: u32) -> u64 {
    support::memory_of(pid, "VmRSS")
}

/// Sends a raw HTTP/1.1 GET of `path` and reads the first `keep` bytes of the answer, then returns the socket
/// without reading more: a reader that stalls.
async fn stalled_reader(farm: &Farm, path: &str, keep: usize) -> (TcpStream, String) {
    let address = farm.url.trim_start_matches("http://");
    let mut tcp = TcpStream::connect(address).await.unwrap();
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: {address}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = vec![0; keep];
    tcp.read_exact(&mut head).await.unwrap();
    (tcp, String::from_utf8_lossy(&head).into_owned())
}

const LOG_BYTES: u64 = 64 << 20;

#[test]
fn slow_readers_of_a_big_log_cost_a_window_each_and_streams_are_capped() {
    run(Duration::from_secs(300), async {
        let farm = Farm::up_with_config("log_cap_bytes = 134217728\nmax_log_streams = 6\n", &[]);
        let repo = farm.hooked_repo("big");
        repo.push_pipeline(&format!(
            "jobs:\n  big:\n    steps: [\"yes 0123456789abcdef0123456789abcdef | head -c {LOG_BYTES}\"]\n"
        ));
        let p = farm.finished_pipeline("big", 1).await;
        assert_eq!(p["status"], "success", "{p:#}");
        let job = p["jobs"][0]["id"].as_str().unwrap().to_owned();

        // Range: the last bytes, a middle part, and past the end.
        let http = reqwest::Client::new();
        let log_url = format!("{}/api/v1/jobs/{job}/log", farm.url);
        let tail = http
            .get(&log_url)
            .header("Range", "bytes=-8")
            .send()
            .await
            .unwrap();
        assert_eq!(tail.status(), 206);
        let range = tail.headers()["content-range"].to_str().unwrap().to_owned();
        assert!(range.ends_with(&format!("/{LOG_BYTES}")), "{range}");
        assert_eq!(&tail.bytes().await.unwrap()[..], &expected_tail()[..]);
        let middle = http
            .get(&log_url)
            .header("Range", "bytes=37-73")
            .send()
            .await
            .unwrap();
        assert_eq!(middle.status(), 206);
        assert_eq!(&middle.bytes().await.unwrap()[..], &line_bytes(37, 74)[..]);
        let past = http
            .get(&log_url)
            .header("Range", format!("bytes={LOG_BYTES}-"))
            .send()
            .await
            .unwrap();
        assert_eq!(past.status(), 416);
        assert_eq!(
            past.headers()["content-range"],
            format!("bytes */{LOG_BYTES}")
        );

        // Eight readers that take a little and stop: four of the raw log, four of the live stream (the review's
        // case: before, each made the server read the whole log into memory, and base64 it).
        let before = rss(farm.pid());
        let mut readers = Vec::new();
        for i in 0..8 {
            let path = if i % 2 == 0 {
                format!("/api/v1/jobs/{job}/log")
            } else {
                format!("/api/v1/jobs/{job}/log/stream")
            };
            let (tcp, head) = stalled_reader(&farm, &path, 4096).await;
            assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head:.200}");
            readers.push(tcp);
        }
        let mut peak = before;
        for _ in 0..60 {
            peak = peak.max(rss(farm.pid()));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mib = |b: u64| b >> 20;
        eprintln!(
            "8 stalled readers of a {} MiB log: server {} → {} MiB",
            mib(LOG_BYTES),
            mib(before),
            mib(peak)
        );
        assert!(
            peak - before < 100 << 20,
            "8 slow readers grew the server by {} MiB",
            mib(peak - before)
        );

        // Four streams are open (max_log_streams = 6): two more fit, the next is refused, saying why.
        let mut streams = Vec::new();
        for _ in 0..2 {
            let (tcp, head) =
                stalled_reader(&farm, &format!("/api/v1/jobs/{job}/log/stream"), 12).await;
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            streams.push(tcp);
        }
        let refused = http.get(format!("{log_url}/stream")).send().await.unwrap();
        assert_eq!(refused.status(), 503);
        let why = refused.text().await.unwrap();
        assert!(why.contains("max_log_streams"), "{why}");
        // A client that leaves gives its place back.
        drop(readers);
        drop(streams);
        eventually(
            "a stream to be accepted again",
            Duration::from_secs(20),
            || async {
                let response = http.get(format!("{log_url}/stream")).send().await.ok()?;
                (response.status() == 200).then_some(())
            },
        )
        .await;
    });
}

/// Bytes `from..to` of the log `yes 0123…def | head -c` wrote: that line, repeated.
fn line_bytes(from: usize, to: usize) -> Vec<u8> {
    let line = b"0123456789abcdef0123456789abcdef\n";
    (from..to).map(|i| line[i % line.len()]).collect()
}

fn expected_tail() -> Vec<u8> {
    let end = LOG_BYTES as usize;
    line_bytes(end - 8, end)
}

#[test]
fn a_client_too_slow_with_its_headers_or_its_body_is_cut_off() {
    run(Duration::from_secs(120), async {
        let farm = Farm::up_with(&["--header-timeout-ms", "1000", "--body-timeout-ms", "1000"]);
        let address = farm.url.trim_start_matches("http://").to_owned();
        // Headers that never end: the connection is closed after the header timeout.
        let mut tcp = TcpStream::connect(&address).await.unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: gantry\r\nX-Slow: ")
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(15), tcp.read_to_end(&mut rest)).await;
        assert!(
            read.is_ok(),
            "the server kept a connection whose headers never ended for 15 s"
        );
        eprintln!("unfinished headers: closed after {:?}", started.elapsed());
        // A body that stops: the request ends after the body timeout, with an answer.
        let mut tcp = TcpStream::connect(&address).await.unwrap();
        tcp.write_all(
            b"POST /hooks/git?repo=none HTTP/1.1\r\nHost: gantry\r\nContent-Type: application/json\r\n\
              Content-Length: 1000\r\n\r\n{\"ref\": ",
        )
        .await
        .unwrap();
        let started = std::time::Instant::now();
        let mut answer = vec![0; 12];
        let read = tokio::time::timeout(Duration::from_secs(15), tcp.read_exact(&mut answer)).await;
        assert!(
            read.is_ok(),
            "the server waited 15 s for a body that had stopped"
        );
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
        eprintln!(
            "stalled body: answered {answer} after {:?}",
            started.elapsed()
        );
        // The server still serves.
        assert_eq!(
            reqwest::get(format!("{}/healthz", farm.url))
                .await
                .unwrap()
                .status(),
            200
        );
    });
}
