//! One folder's names and their types, as `readdir` gives them, kept
//! compact: a walker thread keeps the listings of a few folders of an
//! icon theme (thousands of names each) while it resolves the links
//! beside them, so names sit in one byte buffer (kind, length, bytes)
//! found through a table of 4-byte offsets, instead of one allocation and
//! a hash map entry each.

use std::hash::BuildHasher;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use hashbrown::HashTable;

/// What a name is, not followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Link = 0,
    Folder = 1,
    File = 2,
    Other = 3,
}

#[derive(Default)]
pub struct Listing {
    bytes: Vec<u8>,
    names: HashTable<u32>,
    hasher: hashbrown::DefaultHashBuilder,
    /// False when some name could not be kept (longer than 255 bytes, or
    /// the buffer past 4 GiB): the listing then answers nothing.
    complete: bool,
}

impl Listing {
    /// Reads the folder `dir`.
    pub fn read(dir: &Path) -> io::Result<Listing> {
        let mut listing = Listing {
            complete: true,
            ..Listing::default()
        };
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let t = entry.file_type()?;
            let kind = if t.is_symlink() {
                Kind::Link
            } else if t.is_dir() {
                Kind::Folder
            } else if t.is_file() {
                Kind::File
            } else {
                Kind::Other
            };
            listing.insert(entry.file_name().as_bytes(), kind);
        }
        Ok(listing)
    }

    fn insert(&mut self, name: &[u8], kind: Kind) {
        let (Ok(len), Ok(at)) = (u8::try_from(name.len()), u32::try_from(self.bytes.len())) else {
            self.complete = false;
            return;
        };
        // A fieldless enum's discriminant: a handful of small constants.
        self.bytes.push(kind as u8);
        self.bytes.push(len);
        self.bytes.extend_from_slice(name);
        let hash = self.hasher.hash_one(name);
        let (bytes, hasher) = (&self.bytes, &self.hasher);
        self.names
            .insert_unique(hash, at, |at| hasher.hash_one(name_at(bytes, *at)));
    }

    /// `Some(None)`: no such name; `None`: this listing cannot tell.
    pub fn get(&self, name: &[u8]) -> Option<Option<Kind>> {
        if !self.complete {
            return None;
        }
        let hash = self.hasher.hash_one(name);
        let found = self
            .names
            .find(hash, |at| name_at(&self.bytes, *at) == name)
            .map(|at| match self.bytes.get(*at as usize) {
                Some(0) => Kind::Link,
                Some(1) => Kind::Folder,
                Some(2) => Kind::File,
                _ => Kind::Other,
            });
        Some(found)
    }
}

fn name_at(bytes: &[u8], at: u32) -> &[u8] {
    let at = at as usize;
    let len = bytes.get(at + 1).map_or(0, |l| usize::from(*l));
    bytes.get(at + 2..at + 2 + len).unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_like_the_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::write(dir.join("f.svg"), b"x").unwrap();
        std::fs::create_dir(dir.join("d")).unwrap();
        std::os::unix::fs::symlink("f.svg", dir.join("l.svg")).unwrap();
        let listing = Listing::read(dir).unwrap();
        assert_eq!(listing.get(b"f.svg"), Some(Some(Kind::File)));
        assert_eq!(listing.get(b"d"), Some(Some(Kind::Folder)));
        assert_eq!(listing.get(b"l.svg"), Some(Some(Kind::Link)));
        assert_eq!(listing.get(b"f.sv"), Some(None));
        assert_eq!(listing.get(b""), Some(None));
    }
}
