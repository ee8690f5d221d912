//! The HTTP listener with the limits a host exposed to untrusted clients needs: a connection
//! cap, a header read timeout, a body read timeout, an idle timeout, and a body size bound
//! checked against `Content-Length` before anything is read.
//!
//! hyper gives the header read timeout; tower-http the body timeout and the early size check;
//! the connection cap and the idle timeout are here: a connection over the cap is closed on
//! accept (and counted), and a connection on which nothing was read or written for the idle
//! timeout is closed, in a request or between requests (server-sent event streams write a
//! keep-alive comment at half the idle timeout, so they stay open).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Limits of the HTTP listener (`flagforge host --http-…`).
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Most connections open at once; more are closed on accept.
    pub max_connections: usize,
    /// Time to receive a request's headers.
    pub header_timeout: Duration,
    /// Time to receive a request's body.
    pub body_timeout: Duration,
    /// A connection with no bytes read or written for this long is closed.
    pub idle_timeout: Duration,
    /// Largest request body (checked against `Content-Length` before reading, and while
    /// reading).
    pub max_body_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            max_connections: 4096,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// Connection counters, exported in `/metrics`.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    /// Connections accepted and served.
    pub accepted: AtomicU64,
    /// Connections closed on accept because the cap was reached.
    pub refused: AtomicU64,
    /// Connections closed by the idle timeout.
    pub idle_closed: AtomicU64,
    /// Connections open now.
    pub open: AtomicU64,
}

/// A stream that remembers when it last moved a byte.
struct Tracked {
    inner: TcpStream,
    last: Arc<AtomicU64>,
    epoch: Instant,
}

impl Tracked {
    fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Applies the request-level limits (body size before reading, body read time) to `app`.
pub fn limit(app: Router, limits: &HttpLimits) -> Router {
    app.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        limits.body_timeout,
    ))
    .layer(tower_http::limit::RequestBodyLimitLayer::new(
        limits.max_body_bytes,
    ))
    .layer(axum::extract::DefaultBodyLimit::max(limits.max_body_bytes))
}

/// Serves `app` on `listener` forever under `limits`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    stats: Arc<ConnectionStats>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors or similar: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        };
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        stats.open.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let (app, stats) = (app.clone(), Arc::clone(&stats));
        tokio::spawn(async move {
            let last = Arc::new(AtomicU64::new(0));
            let epoch = Instant::now();
            let io = TokioIo::new(Tracked {
                inner: stream,
                last: Arc::clone(&last),
                epoch,
            });
            let service = hyper_util::service::TowerToHyperService::new(app);
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let conn = builder.serve_connection(io, service);
            tokio::pin!(conn);
            let mut tick =
                tokio::time::interval((limits.idle_timeout / 4).max(Duration::from_millis(50)));
            loop {
                tokio::select! {
                    _ = conn.as_mut() => break,
                    _ = tick.tick() => {
                        let idle_ms = u64::try_from(epoch.elapsed().as_millis())
                            .unwrap_or(u64::MAX)
                            .saturating_sub(last.load(Ordering::Relaxed));
                        if Duration::from_millis(idle_ms) >= limits.idle_timeout {
                            stats.idle_closed.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                }
            }
            stats.open.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
}
