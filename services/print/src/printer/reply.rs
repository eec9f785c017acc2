//! What a printer sends back on the stream, told apart by Epson's identification rules, and
//! the requests whose replies the driver waits for (`GS ( H`, `GS r`).

/// Replies a printer sends on the TCP stream, told apart by Epson's identification rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    /// `DLE EOT n` reply: `(b & 0x93) == 0x12`.
    RealTime(u8),
    /// Automatic Status Back block (4 bytes, first `(b & 0x93) == 0x10`).
    Asb([u8; 4]),
    /// Header-to-NUL block (`37 22 d1 d2 d3 d4 00` for GS ( H), header byte included.
    Block(Vec<u8>),
    /// One-byte non-real-time reply (`GS r`): `(b & 0x90) == 0`.
    Byte(u8),
}

#[derive(Default)]
pub(crate) struct ReplyParser {
    block: Option<Vec<u8>>,
    asb: Vec<u8>,
}

impl ReplyParser {
    pub(crate) fn feed(&mut self, b: u8, out: &mut Vec<Reply>) {
        if let Some(block) = self.block.as_mut() {
            if b == 0 {
                let block = self.block.take().unwrap_or_default();
                out.push(Reply::Block(block));
            } else if block.len() < 256 {
                block.push(b);
            }
            return;
        }
        if !self.asb.is_empty() {
            self.asb.push(b);
            if self.asb.len() == 4 {
                let a = std::mem::take(&mut self.asb);
                out.push(Reply::Asb([a[0], a[1], a[2], a[3]]));
            }
            return;
        }
        match b {
            0x35 | 0x37 | 0x3B | 0x3D | 0x5F => self.block = Some(vec![b]),
            _ if b & 0x93 == 0x12 => out.push(Reply::RealTime(b)),
            _ if b & 0x93 == 0x10 => self.asb.push(b),
            _ if b & 0x90 == 0 => out.push(Reply::Byte(b)),
            _ => {}
        }
    }
}

pub const GS_R_PAPER: [u8; 3] = [0x1D, 0x72, 0x01];

/// The `GS ( H` fn 48 request for process id `id`.
pub fn process_id_request(id: [u8; 4]) -> [u8; 11] {
    [0x1D, 0x28, 0x48, 0x06, 0x00, 0x30, 0x30, id[0], id[1], id[2], id[3]]
}

/// A 4-character printable process id (base 36) from a number.
pub fn process_id(n: u64) -> [u8; 4] {
    const DIGITS: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut n = n % 36u64.pow(4);
    let mut id = [b'0'; 4];
    for slot in id.iter_mut().rev() {
        *slot = DIGITS[(n % 36) as usize];
        n /= 36;
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_replies_apart() {
        let mut p = ReplyParser::default();
        let mut out = Vec::new();
        for b in [0x12, 0x37, 0x22, b'0', b'0', b'1', b'Z', 0x00, 0x10, 0, 0, 0x0C, 0x0C] {
            p.feed(b, &mut out);
        }
        assert_eq!(
            out,
            vec![
                Reply::RealTime(0x12),
                Reply::Block(vec![0x37, 0x22, b'0', b'0', b'1', b'Z']),
                Reply::Asb([0x10, 0, 0, 0x0C]),
                Reply::Byte(0x0C)
            ]
        );
    }

    #[test]
    fn process_ids_are_four_printable_chars() {
        assert_eq!(&process_id(0), b"0000");
        assert_eq!(&process_id(35), b"000Z");
        assert!(process_id(u64::MAX).iter().all(|b| (0x20..0x7F).contains(b)));
    }
}
