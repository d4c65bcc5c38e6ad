//! A closed-loop HTTP(S) load generator for the authentication benchmark (`bench/auth.sh`).
//!
//! CONCURRENCY tasks each own one reqwest client (HTTP/1.1, rustls, one kept-alive connection,
//! as B2C reuses its connections) and send user-flow connector requests back to back: the token
//! step (`PreTokenIssuance`) for identity `signin-{i}` with email `customer{i}@example.com`,
//! `i` cycling over `0..CUSTOMERS` (the tasks start spread over the range). Every answer is
//! checked: HTTP 200, `"action":"Continue"`, `"extension_AutoLinkOutcome":"AlreadyLinked"`, no
//! `extension_AutoLinkError`. Connections are opened (TLS handshakes included) during the
//! warm-up; only requests that complete inside the measured window that follows are counted.
//!
//! Authentication: `--authorization VALUE` (or `BENCH_AUTHORIZATION`) sends that `Authorization`
//! header; `--identity PEM` (certificate chain and private key) presents a client certificate in
//! the TLS handshake; `--ca PEM` trusts the server's certificate authority (and nothing else).
//!
//! `--prelink`: one pass over `0..CUSTOMERS` (each `i` once, no time limit) that accepts
//! `Linked` or `AlreadyLinked`: links the identities the measured runs then find linked.
//!
//! `--server-pid PID`: the server's CPU time during the measured window is read from
//! `/proc/PID/stat`, with this process's and the whole machine's, so the result says how much CPU
//! the server spent per request and how busy the machine was otherwise.
//!
//! Output, one machine-readable line on stdout (plus `FIRST_BAD ...` when an answer was bad):
//!
//! ```text
//! RESULT label=L requests=N seconds=S rps=R p50_ms=.. p90_ms=.. p99_ms=.. max_ms=.. bad=B
//!   errors=E linked=.. already=.. conns_start=.. conns_end=.. conns_kept=.. server_cpu_ms=..
//!   server_cpu_us_per_req=.. client_cpu_ms=.. other_cpu_pct=..
//! ```
//!
//! `bad` counts every bad answer and `errors` every transport error, warm-up included: a run with
//! either is not a valid figure. `conns_*` are the ESTABLISHED connections to the server's port at
//! the start and end of the window and how many of them are the same sockets (read from
//! `/proc/net/tcp`): `conns_kept` equal to the concurrency means no connection was reopened.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;

/// The default body: the user-flow token step for a linked local account. `{i}` is the identity
/// number, `{client_id}` the relying party's client id.
const DEFAULT_TEMPLATE: &str = r#"{"email":"customer{i}@example.com","identities":[{"signInType":"emailAddress","issuer":"fabrikam.onmicrosoft.com","issuerAssignedId":"customer{i}@example.com"}],"objectId":"signin-{i}","step":"PreTokenIssuance","client_id":"{client_id}","ui_locales":"en-US"}"#;

#[derive(Parser, Debug, Clone)]
#[command(about = "Closed-loop load generator for the autolink connector (bench/auth.sh)")]
struct Args {
    /// The connector URL, e.g. https://127.0.0.1:8443/b2c/api-connector.
    #[arg(long)]
    url: String,
    /// Concurrent connections (one task and one connection each).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Warm-up seconds (connections and TLS handshakes happen here; not counted).
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// Runtime worker threads of this load generator.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Identities cycled over (`i` in 0..customers).
    #[arg(long, default_value_t = 10_000)]
    customers: usize,
    /// The relying party's client id put in the body.
    #[arg(long, default_value = "93fd07aa-333c-409d-955d-96008fd08dd9")]
    client_id: String,
    /// Request body template; `{i}` and `{client_id}` are replaced.
    #[arg(long, default_value = DEFAULT_TEMPLATE)]
    body_template: String,
    /// `Authorization` header value (none when absent).
    #[arg(long, env = "BENCH_AUTHORIZATION", hide_env_values = true)]
    authorization: Option<String>,
    /// PEM file with the client certificate (chain) and its private key.
    #[arg(long)]
    identity: Option<std::path::PathBuf>,
    /// PEM file of the CA that issued the server's certificate (the only root trusted).
    #[arg(long)]
    ca: Option<std::path::PathBuf>,
    /// One pass over every identity, accepting `Linked` or `AlreadyLinked`.
    #[arg(long)]
    prelink: bool,
    /// The server's process id, to measure its CPU time during the window.
    #[arg(long)]
    server_pid: Option<u32>,
    /// A label echoed in the result line.
    #[arg(long, default_value = "run")]
    label: String,
    /// Per-request time limit, in seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
}

/// What one task saw.
#[derive(Default)]
struct TaskResult {
    /// Latencies (µs) of the requests completed inside the window.
    latencies_us: Vec<u32>,
    bad: u64,
    errors: u64,
    linked: u64,
    already: u64,
    first_bad: Option<String>,
}

impl TaskResult {
    fn record(&mut self, answer: Result<Result<&'static str, String>, String>) {
        match answer {
            Ok(Ok("Linked")) => self.linked += 1,
            Ok(Ok(_)) => self.already += 1,
            Ok(Err(why)) => self.note_bad(why),
            Err(error) => {
                self.errors += 1;
                if self.first_bad.is_none() {
                    self.first_bad = Some(format!("transport error: {error}"));
                }
            }
        }
    }

    fn note_bad(&mut self, why: String) {
        self.bad += 1;
        if self.first_bad.is_none() {
            self.first_bad = Some(why);
        }
    }
}

/// The body template split around `{i}`.
struct Template {
    parts: Vec<String>,
}

impl Template {
    fn new(template: &str, client_id: &str) -> Template {
        let filled = template.replace("{client_id}", client_id);
        Template {
            parts: filled.split("{i}").map(str::to_string).collect(),
        }
    }

    fn body(&self, i: usize) -> String {
        let number = i.to_string();
        let mut out = String::with_capacity(self.parts.iter().map(String::len).sum::<usize>() + 32);
        for (n, part) in self.parts.iter().enumerate() {
            if n > 0 {
                out.push_str(&number);
            }
            out.push_str(part);
        }
        out
    }
}

fn build_client(args: &Args) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1)
        .pool_idle_timeout(None)
        .timeout(Duration::from_secs_f64(args.timeout))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(ca) = &args.ca {
        let pem = std::fs::read(ca)
            .map_err(|e| anyhow::anyhow!("cannot read --ca {}: {e}", ca.display()))?;
        builder = builder.tls_built_in_root_certs(false);
        for cert in reqwest::Certificate::from_pem_bundle(&pem)? {
            builder = builder.add_root_certificate(cert);
        }
    }
    if let Some(identity) = &args.identity {
        let pem = std::fs::read(identity)
            .map_err(|e| anyhow::anyhow!("cannot read --identity {}: {e}", identity.display()))?;
        builder = builder.identity(reqwest::Identity::from_pem(&pem)?);
    }
    Ok(builder.build()?)
}

/// Checks one answer; returns the outcome (`Linked` / `AlreadyLinked`) or why it is bad.
fn check(status: u16, body: &str, prelink: bool) -> Result<&'static str, String> {
    let snippet = || body.chars().take(300).collect::<String>();
    if status != 200 {
        return Err(format!("status {status}: {}", snippet()));
    }
    if !body.contains(r#""action":"Continue""#) {
        return Err(format!("no Continue: {}", snippet()));
    }
    if body.contains("AutoLinkError") {
        return Err(format!("refused: {}", snippet()));
    }
    if body.contains(r#""extension_AutoLinkOutcome":"AlreadyLinked""#) {
        return Ok("AlreadyLinked");
    }
    if prelink && body.contains(r#""extension_AutoLinkOutcome":"Linked""#) {
        return Ok("Linked");
    }
    Err(format!(
        "expected {}: {}",
        if prelink {
            "Linked or AlreadyLinked"
        } else {
            "AlreadyLinked"
        },
        snippet()
    ))
}

/// Sends one request; `Ok(Ok(outcome))`, `Ok(Err(bad answer))` or `Err(transport error)`.
async fn one(
    client: &reqwest::Client,
    args: &Args,
    body: String,
) -> Result<Result<&'static str, String>, String> {
    let mut request = client
        .post(&args.url)
        .header("content-type", "application/json")
        .body(body);
    if let Some(value) = &args.authorization {
        request = request.header("authorization", value);
    }
    let response = request.send().await.map_err(|e| format!("{e:#}"))?;
    let status = response.status().as_u16();
    let text = response.text().await.map_err(|e| format!("{e:#}"))?;
    Ok(check(status, &text, args.prelink))
}

struct Window {
    start: Instant,
    end: Instant,
}

async fn task(
    n: usize,
    client: reqwest::Client,
    args: Arc<Args>,
    template: Arc<Template>,
    window: Arc<Window>,
) -> (TaskResult, reqwest::Client) {
    let mut result = TaskResult::default();
    let customers = args.customers.max(1);
    if args.prelink {
        // Each identity exactly once: task n takes i = n, n + C, n + 2C, ...
        let mut i = n;
        while i < customers {
            let answer = one(&client, &args, template.body(i)).await;
            result.record(answer);
            i += args.concurrency;
        }
        return (result, client);
    }
    let offset = n * customers / args.concurrency.max(1);
    let mut k = 0usize;
    while Instant::now() < window.end {
        let body = template.body((offset + k) % customers);
        k += 1;
        let started = Instant::now();
        let answer = one(&client, &args, body).await;
        let finished = Instant::now();
        if finished >= window.start && finished <= window.end {
            let us = finished.duration_since(started).as_micros();
            result.latencies_us.push(us.min(u32::MAX as u128) as u32);
        }
        result.record(answer);
    }
    // The client (and its connection) goes back to main, which drops it only after reading the
    // connections at the window's end.
    (result, client)
}

/// utime + stime of a process, in clock ticks (USER_HZ, 100 on Linux).
fn process_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 of the whole line, utime 14 and stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Busy ticks of the whole machine (all cores): user, nice, system, irq, softirq, steal.
fn machine_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    Some(v.first()? + v.get(1)? + v.get(2)? + v.get(5)? + v.get(6)? + v.get(7)?)
}

#[derive(Clone, Copy, Default)]
struct CpuSample {
    server: Option<u64>,
    client: Option<u64>,
    machine: Option<u64>,
}

fn cpu_sample(server_pid: Option<u32>) -> CpuSample {
    CpuSample {
        server: server_pid.and_then(|p| process_ticks(&p.to_string())),
        client: process_ticks("self"),
        machine: machine_ticks(),
    }
}

/// Local ports of the ESTABLISHED IPv4/IPv6 connections whose remote port is `port`.
fn connections_to(port: u16) -> HashSet<String> {
    let mut set = HashSet::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 4 || f[3] != "01" {
                continue;
            }
            let remote_port = f[2]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if remote_port == Some(port) {
                set.insert(f[1].to_string());
            }
        }
    }
    set
}

fn server_port(url: &str) -> Option<u16> {
    let url = reqwest::Url::parse(url).ok()?;
    url.port_or_known_default()
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Arc<Args>) -> anyhow::Result<()> {
    let template = Arc::new(Template::new(&args.body_template, &args.client_id));
    let clients = (0..args.concurrency)
        .map(|_| build_client(&args))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let t0 = Instant::now();
    let start = t0 + Duration::from_secs_f64(args.warmup.max(0.0));
    let window = Arc::new(Window {
        start,
        end: start + Duration::from_secs_f64(args.duration.max(0.001)),
    });
    let mut handles = Vec::with_capacity(args.concurrency);
    for (n, client) in clients.into_iter().enumerate() {
        handles.push(tokio::spawn(task(
            n,
            client,
            args.clone(),
            template.clone(),
            window.clone(),
        )));
    }

    // CPU and connections at the window's edges (not in prelink mode, which has no window).
    let port = server_port(&args.url).unwrap_or(0);
    let mut edges = None;
    if !args.prelink {
        tokio::time::sleep_until(window.start.into()).await;
        let cpu0 = cpu_sample(args.server_pid);
        let conns0 = connections_to(port);
        tokio::time::sleep_until(window.end.into()).await;
        let cpu1 = cpu_sample(args.server_pid);
        let conns1 = connections_to(port);
        edges = Some((cpu0, cpu1, conns0, conns1));
    }

    let mut total = TaskResult::default();
    let mut finished = Vec::with_capacity(handles.len());
    for handle in handles {
        finished.push(handle.await?);
    }
    for (r, _client) in finished {
        total.latencies_us.extend(r.latencies_us);
        total.bad += r.bad;
        total.errors += r.errors;
        total.linked += r.linked;
        total.already += r.already;
        if total.first_bad.is_none() {
            total.first_bad = r.first_bad;
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    total.latencies_us.sort_unstable();
    let lat = &total.latencies_us;
    let (requests, seconds) = if args.prelink {
        (
            total.linked + total.already + total.bad + total.errors,
            elapsed,
        )
    } else {
        (lat.len() as u64, args.duration)
    };
    let mut line = format!(
        "RESULT label={} requests={} seconds={:.3} rps={:.1} p50_ms={:.3} p90_ms={:.3} \
         p99_ms={:.3} max_ms={:.3} bad={} errors={} linked={} already={}",
        args.label,
        requests,
        seconds,
        requests as f64 / seconds,
        percentile(lat, 50.0),
        percentile(lat, 90.0),
        percentile(lat, 99.0),
        lat.last().copied().unwrap_or(0) as f64 / 1000.0,
        total.bad,
        total.errors,
        total.linked,
        total.already,
    );
    if let Some((cpu0, cpu1, conns0, conns1)) = edges {
        let kept = conns0.intersection(&conns1).count();
        line.push_str(&format!(
            " conns_start={} conns_end={} conns_kept={}",
            conns0.len(),
            conns1.len(),
            kept
        ));
        let ms = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 * 10.0),
            _ => None,
        };
        let server = ms(cpu0.server, cpu1.server);
        let client = ms(cpu0.client, cpu1.client);
        let machine = ms(cpu0.machine, cpu1.machine);
        if let Some(server) = server {
            line.push_str(&format!(
                " server_cpu_ms={:.0} server_cpu_us_per_req={:.1}",
                server,
                if requests > 0 {
                    server * 1000.0 / requests as f64
                } else {
                    0.0
                }
            ));
        }
        if let Some(client) = client {
            line.push_str(&format!(" client_cpu_ms={client:.0}"));
        }
        if let (Some(machine), Some(client)) = (machine, client) {
            let other = (machine - client - server.unwrap_or(0.0)).max(0.0);
            line.push_str(&format!(
                " other_cpu_pct={:.0}",
                other / (args.duration * 10.0)
            ));
        }
    }
    println!("{line}");
    if let Some(first) = &total.first_bad {
        println!("FIRST_BAD {}", first.replace('\n', " "));
    }
    Ok(())
}
