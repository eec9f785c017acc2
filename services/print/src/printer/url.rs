//! Where a printer is: `tcp://host[:port]` or `file:///dev/...`.

use std::fmt;
use std::str::FromStr;

/// Where the printer is: `tcp://host[:port]` (Ethernet, port 9100) or `file:///dev/usb/lp0`
/// (a USB printer through the kernel's usblp device, written and read like the socket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrinterUrl {
    Tcp { host: String, port: u16 },
    File { path: std::path::PathBuf },
}

impl FromStr for PrinterUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = s.strip_prefix("tcp://") {
            let rest = rest.trim_end_matches('/');
            let (host, port) = match rest.rsplit_once(':') {
                Some((h, p)) if !h.is_empty() => (
                    h.trim_start_matches('[').trim_end_matches(']').to_owned(),
                    p.parse::<u16>().map_err(|_| format!("invalid port {p:?} in {s:?}"))?,
                ),
                Some(_) => return Err(format!("missing host in {s:?}")),
                None if !rest.is_empty() => (rest.to_owned(), 9100),
                None => return Err(format!("missing host in {s:?}")),
            };
            if port == 0 {
                return Err(format!("port 0 is not a printer port in {s:?}"));
            }
            return Ok(PrinterUrl::Tcp { host, port });
        }
        if let Some(path) = s.strip_prefix("file://") {
            if !path.starts_with('/') || path.len() < 2 {
                return Err(format!("{s:?}: a device URL needs an absolute path, e.g. file:///dev/usb/lp0"));
            }
            return Ok(PrinterUrl::File { path: path.into() });
        }
        Err(format!("{s:?} is not a printer URL: expected tcp://host:port or file:///dev/usb/lp0"))
    }
}

impl fmt::Display for PrinterUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrinterUrl::Tcp { host, port } if host.contains(':') => write!(f, "tcp://[{host}]:{port}"),
            PrinterUrl::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            PrinterUrl::File { path } => write!(f, "file://{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_printer_urls() {
        assert_eq!("tcp://192.168.1.50:9100".parse(), Ok(PrinterUrl::Tcp { host: "192.168.1.50".into(), port: 9100 }));
        assert_eq!("tcp://printer".parse(), Ok(PrinterUrl::Tcp { host: "printer".into(), port: 9100 }));
        assert!("http://x".parse::<PrinterUrl>().is_err());
        assert!("tcp://:9100".parse::<PrinterUrl>().is_err());
        assert!("tcp://x:99999".parse::<PrinterUrl>().is_err());
    }

    #[test]
    fn parses_device_urls() {
        let url: PrinterUrl = "file:///dev/usb/lp0".parse().unwrap();
        assert_eq!(url, PrinterUrl::File { path: "/dev/usb/lp0".into() });
        assert_eq!(url.to_string(), "file:///dev/usb/lp0");
        for bad in ["file://dev/usb/lp0", "file://", "file:///"] {
            assert!(bad.parse::<PrinterUrl>().unwrap_err().contains("absolute path"), "{bad}");
        }
    }
}
