//! A TCP proxy in front of PostgreSQL that a test can cut, and that counts what each client
//! connection asks the server (read from the protocol's messages, so the connection must not
//! use TLS: `sslmode=disable`).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Forward every connection.
pub const OPEN: u8 = 0;
/// Refuse: close every connection at once (a database that is down).
pub const REFUSE: u8 = 1;
/// Stall: accept and never answer (a database behind a black hole).
pub const STALL: u8 = 2;

/// What one forwarded client connection asked the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Asked {
    /// Round trips: simple queries plus the Sync that ends each extended-protocol exchange.
    pub round_trips: u64,
    /// Simple queries whose whole text is `SELECT 1` (the pool's test of a connection).
    pub select_ones: u64,
}

/// A TCP proxy in front of PostgreSQL.
pub struct Proxy {
    pub port: u16,
    mode: Arc<AtomicU8>,
    connections: Arc<tokio::sync::Mutex<Vec<JoinHandle<()>>>>,
    /// One entry per forwarded connection, in the order they were accepted.
    asked: Arc<Mutex<Vec<Asked>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(AtomicU8::new(OPEN));
        let connections: Arc<tokio::sync::Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let asked: Arc<Mutex<Vec<Asked>>> = Arc::default();
        let accept = {
            let (mode, connections, asked) = (mode.clone(), connections.clone(), asked.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((inbound, _)) = listener.accept().await else {
                        return;
                    };
                    let mode = mode.load(Ordering::SeqCst);
                    let (upstream, asked) = (upstream.clone(), asked.clone());
                    let task = tokio::spawn(async move {
                        match mode {
                            OPEN => {
                                if let Ok(outbound) = TcpStream::connect(&upstream).await {
                                    forward(inbound, outbound, asked).await;
                                }
                            }
                            STALL => tokio::time::sleep(Duration::from_secs(3600)).await,
                            _ => drop(inbound),
                        }
                    });
                    connections.lock().await.push(task);
                }
            })
        };
        Proxy {
            port,
            mode,
            connections,
            asked,
            accept,
        }
    }

    /// Cuts every open connection and handles new ones in `mode`.
    pub async fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
        for task in self.connections.lock().await.drain(..) {
            task.abort();
        }
    }

    /// What each connection forwarded so far asked, in the order they were accepted.
    pub fn asked(&self) -> Vec<Asked> {
        self.asked.lock().unwrap().clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Forwards both ways, reading the client's messages on the way.
async fn forward(inbound: TcpStream, outbound: TcpStream, asked: Arc<Mutex<Vec<Asked>>>) {
    let index = {
        let mut asked = asked.lock().unwrap();
        asked.push(Asked::default());
        asked.len() - 1
    };
    let (mut client_read, mut client_write) = inbound.into_split();
    let (mut server_read, mut server_write) = outbound.into_split();
    let up = async move {
        let mut messages = FrontendMessages::default();
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let n = match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let counted = messages.feed(&buffer[..n]);
            {
                let mut asked = asked.lock().unwrap();
                asked[index].round_trips += counted.round_trips;
                asked[index].select_ones += counted.select_ones;
            }
            if server_write.write_all(&buffer[..n]).await.is_err() {
                return;
            }
        }
    };
    let down = async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

/// Splits what a client sends into the protocol's messages: untyped ones first (an optional
/// SSL or GSS encryption request, then the startup message), then a type byte and a length.
#[derive(Default)]
struct FrontendMessages {
    started: bool,
    pending: Vec<u8>,
}

impl FrontendMessages {
    const SSL_REQUEST: u32 = 80_877_103;
    const GSSENC_REQUEST: u32 = 80_877_104;

    fn feed(&mut self, bytes: &[u8]) -> Asked {
        self.pending.extend_from_slice(bytes);
        let mut asked = Asked::default();
        loop {
            let int = |at: usize| u32::from_be_bytes(self.pending[at..at + 4].try_into().unwrap());
            if !self.started {
                if self.pending.len() < 8 || self.pending.len() < int(0) as usize {
                    return asked;
                }
                let (length, code) = (int(0) as usize, int(4));
                self.started = code != Self::SSL_REQUEST && code != Self::GSSENC_REQUEST;
                self.pending.drain(..length);
                continue;
            }
            if self.pending.len() < 5 || self.pending.len() < 1 + int(1) as usize {
                return asked;
            }
            let end = 1 + int(1) as usize;
            match self.pending[0] {
                b'Q' => {
                    asked.round_trips += 1;
                    if &self.pending[5..end] == b"SELECT 1\0" {
                        asked.select_ones += 1;
                    }
                }
                b'S' => asked.round_trips += 1,
                _ => {}
            }
            self.pending.drain(..end);
        }
    }
}
