//! API keys that arrive in environment variables leave the environment.
//!
//! `unsetenv` only drops the C library's pointer to a variable: its bytes
//! stay in the block the kernel laid out at `exec`, and that block is what
//! `/proc/<pid>/environ` shows to every process of the same user, the token
//! command included. So a key's value is copied here, then its bytes are
//! overwritten in place. Later config reloads find the copy: the process
//! environment never gets the key back.

use std::collections::BTreeMap;
use std::ffi::{CStr, OsString};
use std::os::raw::c_char;
use std::sync::Mutex;

extern "C" {
    /// The C library's environment; glibc and musl both export it.
    static mut environ: *mut *mut c_char;
}

/// Keys taken out of the environment, by variable name.
static TAKEN: Mutex<BTreeMap<String, OsString>> = Mutex::new(BTreeMap::new());

/// Whether other threads may be reading the environment while a variable
/// is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// Start-up, before the runtime: the variable is also unset, so no child
    /// inherits even its name.
    NoneYet,
    /// Later (a reload naming a new variable): `unsetenv` would race with
    /// the C library's readers, so the value's bytes are only blanked.
    Running,
}

/// The value of `var`, taken out of the environment on first use and kept
/// for the process's life. `None` when it was never set.
pub fn take(var: &str, threads: Threads) -> Option<OsString> {
    if var.is_empty() || var.contains(['=', '\0']) {
        return None;
    }
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(value) = taken.get(var) {
        return Some(value.clone());
    }
    let value = std::env::var_os(var)?;
    blank(var);
    if threads == Threads::NoneYet {
        std::env::remove_var(var);
    }
    taken.insert(var.to_string(), value.clone());
    Some(value)
}

/// Overwrites with NULs the value of every `var=value` entry of the C
/// environment, wherever it lives (the original block or a copy made by
/// `setenv`). Names and pointers stay as they are.
fn blank(var: &str) {
    let name = var.as_bytes();
    // SAFETY: `environ` is the C library's NULL-terminated array of pointers
    // to NUL-terminated strings. Only bytes strictly inside one string's
    // value are written, never its name, its NUL or any pointer, so every
    // reader still sees well-formed strings.
    unsafe {
        let mut entry = std::ptr::addr_of!(environ).read();
        if entry.is_null() {
            return;
        }
        while !(*entry).is_null() {
            let text = *entry;
            let len = CStr::from_ptr(text).to_bytes().len();
            let is_var = len > name.len()
                && CStr::from_ptr(text).to_bytes().starts_with(name)
                && *text.add(name.len()) as u8 == b'=';
            if is_var {
                std::ptr::write_bytes(text.add(name.len() + 1), 0, len - name.len() - 1);
            }
            entry = entry.add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_variable_is_blanked_and_still_known() {
        let var = "OPTIWATCH_TEST_TAKEN_KEY";
        std::env::set_var(var, "opt_secret_value");
        assert_eq!(
            take(var, Threads::Running).as_deref(),
            Some(std::ffi::OsStr::new("opt_secret_value"))
        );
        // Still set (other threads run), but nothing of the value is left.
        assert_eq!(
            std::env::var_os(var).as_deref(),
            Some(std::ffi::OsStr::new(""))
        );
        assert_eq!(
            take(var, Threads::Running).as_deref(),
            Some(std::ffi::OsStr::new("opt_secret_value"))
        );
        assert_eq!(take("OPTIWATCH_TEST_NEVER_SET", Threads::Running), None);
        assert_eq!(take("A=B", Threads::Running), None);
    }
}
