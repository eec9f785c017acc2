//! The device transport: a USB printer through the kernel's usblp device (or any character
//! device), non-blocking and driven by the reactor, so it reads and writes like the socket.

/// The byte stream to a printer: a TCP socket or a device file.
pub(crate) trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// A character device (usblp, a tty) opened non-blocking and driven by the reactor: a status
/// request the device never answers times out without leaving a thread blocked in `read`
/// (a blocking-pool read would hold its thread, and the device, until the printer spoke).
pub(crate) struct Device(tokio::io::unix::AsyncFd<std::fs::File>);

impl Device {
    pub(crate) fn open(path: &std::path::Path) -> std::io::Result<Device> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new().read(true).write(true).custom_flags(libc_nonblock()).open(path)?;
        // `AsyncFd::new` is deprecated for types that may not own their descriptor; a
        // `std::fs::File` owns it, and the replacement `register` is `unsafe`, which this crate
        // forbids. (usblp allows one open at a time, so a FIFO-style reader + writer pair of
        // `tokio::net::unix::pipe` is not an option.)
        #[allow(deprecated)]
        let fd = tokio::io::unix::AsyncFd::new(file)?;
        Ok(Device(fd))
    }
}

/// `O_NONBLOCK | O_NOCTTY` (Linux values; the device must not become our terminal).
fn libc_nonblock() -> i32 {
    0o4000 | 0o400
}

impl tokio::io::AsyncRead for Device {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::io::Read;
        loop {
            let mut guard = std::task::ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| fd.get_ref().read(unfilled)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return std::task::Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return std::task::Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl tokio::io::AsyncWrite for Device {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::io::Write;
        loop {
            let mut guard = std::task::ready!(self.0.poll_write_ready(cx))?;
            match guard.try_io(|fd| fd.get_ref().write(data)) {
                Ok(result) => return std::task::Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
