//! A lean HTTP load generator: one keep-alive HTTP/1.1 connection per
//! client, one request in flight on it, written by hand and read by its
//! `Content-Length`, with no HTTP library in between. The generator shares
//! the machine with the host, so whatever it spends is taken from the host;
//! this spends a write and a read per request. Figure 8 measures what it
//! costs by sending `GET /healthz`, which the host answers with no work.

use std::net::SocketAddr;

use anyhow::{Context, bail};
use async_trait::async_trait;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::systems::{Bank, Command};

/// Connections to one server, one per client.
pub struct Connections {
    address: SocketAddr,
    open: Vec<Mutex<Option<BufReader<TcpStream>>>>,
}

impl Connections {
    /// `clients` connections to `address`, opened on first use.
    pub fn new(address: SocketAddr, clients: usize) -> Self {
        Connections {
            address,
            open: (0..clients.max(1)).map(|_| Mutex::new(None)).collect(),
        }
    }

    /// Sends `request` (a whole request, head and body) on connection
    /// `which` and reads the answer's status; the body is read and dropped.
    pub async fn send(&self, which: usize, request: &[u8]) -> anyhow::Result<u16> {
        let mut slot = self.open[which % self.open.len()].lock().await;
        let connection = match slot.as_mut() {
            Some(connection) => connection,
            None => {
                let stream = TcpStream::connect(self.address)
                    .await
                    .context("connecting")?;
                stream.set_nodelay(true)?;
                slot.insert(BufReader::new(stream))
            }
        };
        let answer = exchange(connection, request).await;
        if answer.is_err() {
            // A broken connection is opened again by the next request.
            *slot = None;
        }
        answer
    }
}

async fn exchange(connection: &mut BufReader<TcpStream>, request: &[u8]) -> anyhow::Result<u16> {
    connection.get_mut().write_all(request).await?;
    let mut line = String::new();
    connection.read_line(&mut line).await?;
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("no status line: {line:?}"))?;
    let mut length = 0usize;
    loop {
        line.clear();
        if connection.read_line(&mut line).await? == 0 {
            bail!("the connection closed mid-answer");
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().context("Content-Length")?;
        }
    }
    let mut body = vec![0; length];
    connection.read_exact(&mut body).await?;
    Ok(status)
}

/// The bank over [`Connections`]: account `index` goes over connection
/// `index % clients`, which is the client that owns it.
pub struct RawHttpBank(pub Connections);

#[async_trait]
impl Bank for RawHttpBank {
    async fn run(&self, index: usize, command: Command) -> anyhow::Result<()> {
        let body = command.payload();
        let request = format!(
            "POST /api/commands/Bank/Account/acc-{index:03}/{} HTTP/1.1\r\nHost: bench\r\nContent-Length: {}\r\n\r\n{body}",
            command.type_name(),
            body.len()
        );
        match self.0.send(index, request.as_bytes()).await? {
            200 => Ok(()),
            status => bail!("HTTP {status}"),
        }
    }
}
