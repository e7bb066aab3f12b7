//! The Xauthority file format (Xau): entries of family, address, display
//! number, auth name and data, each field but the family a big-endian `u16`
//! length and its bytes. The GUI reads the cookie the nested server was given
//! and writes it for the sandbox as a `FamilyWild` entry, which matches
//! whatever host name the sandbox has.

#![forbid(unsafe_code)]

/// `FamilyWild`: matches any address.
const FAMILY_WILD: u16 = 0xffff;
/// The only auth scheme we carry.
pub(crate) const MIT_MAGIC_COOKIE: &[u8] = b"MIT-MAGIC-COOKIE-1";

/// One entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) family: u16,
    pub(crate) address: Vec<u8>,
    pub(crate) number: Vec<u8>,
    pub(crate) name: Vec<u8>,
    pub(crate) data: Vec<u8>,
}

/// The entries of an Xauthority file (a truncated last entry is ignored).
pub(crate) fn parse(mut b: &[u8]) -> Vec<Entry> {
    fn u16_at(b: &mut &[u8]) -> Option<u16> {
        let (h, t) = b.split_first_chunk::<2>()?;
        *b = t;
        Some(u16::from_be_bytes(*h))
    }
    fn field(b: &mut &[u8]) -> Option<Vec<u8>> {
        let n = usize::from(u16_at(b)?);
        if b.len() < n {
            return None;
        }
        let (f, t) = b.split_at(n);
        *b = t;
        Some(f.to_vec())
    }
    let mut out = Vec::new();
    loop {
        let entry = (|| {
            Some(Entry {
                family: u16_at(&mut b)?,
                address: field(&mut b)?,
                number: field(&mut b)?,
                name: field(&mut b)?,
                data: field(&mut b)?,
            })
        })();
        match entry {
            Some(e) => out.push(e),
            None => return out,
        }
    }
}

/// The MIT-MAGIC-COOKIE-1 data for display `number` in `file`.
pub(crate) fn cookie_for(file: &[u8], number: u32) -> Option<Vec<u8>> {
    let n = number.to_string().into_bytes();
    parse(file)
        .into_iter()
        .find(|e| e.number == n && e.name == MIT_MAGIC_COOKIE && !e.data.is_empty())
        .map(|e| e.data)
}

/// A file with one `FamilyWild` entry: `cookie` for display `number`.
pub(crate) fn wild_file(number: u32, cookie: &[u8]) -> Vec<u8> {
    let mut out = FAMILY_WILD.to_be_bytes().to_vec();
    let number = number.to_string();
    for f in [b"".as_slice(), number.as_bytes(), MIT_MAGIC_COOKIE, cookie] {
        out.extend_from_slice(&(f.len() as u16).to_be_bytes());
        out.extend_from_slice(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wild_entry_reads_back_and_is_found_by_number() {
        let f = wild_file(42, &[1, 2, 3]);
        let e = parse(&f);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].family, FAMILY_WILD);
        assert!(e[0].address.is_empty());
        assert_eq!(cookie_for(&f, 42), Some(vec![1, 2, 3]));
        assert_eq!(cookie_for(&f, 4), None);
    }

    #[test]
    fn truncated_files_yield_the_whole_entries_only() {
        let mut f = wild_file(1, &[9; 16]);
        f.extend_from_slice(&wild_file(2, &[8; 16])[..7]);
        assert_eq!(parse(&f).len(), 1);
        assert!(parse(&[0xff]).is_empty());
    }
}
