//! A private file on Windows: what mode 0600 gives a key on Unix.
//!
//! Windows files inherit their folder's ACL, and `%ProgramData%` lets every
//! local user read what is created below it, so a private file gets a
//! protected DACL of its own: full control for SYSTEM, Administrators and the
//! file's owner, nothing for anyone else.
//!
//! Why `unsafe` here: these are two Win32 calls (SDDL to a security
//! descriptor, set it on a file) that no maintained crate wraps on their own;
//! windows-sys is linked anyway (async-io, quinn-udp). This is the one module
//! of flor-vertex allowed `unsafe`, and it compiles only for Windows.
#![allow(unsafe_code)]

use std::ffi::OsStr;
use std::io;
use std::os::windows::ffi::OsStrExt;
use std::path::Path;

use windows_sys::Win32::Foundation::LocalFree;
use windows_sys::Win32::Security::Authorization::{
    ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
};
use windows_sys::Win32::Security::{
    SetFileSecurityW, DACL_SECURITY_INFORMATION, PROTECTED_DACL_SECURITY_INFORMATION,
    PSECURITY_DESCRIPTOR,
};

/// SYSTEM, built-in Administrators and the owner: full control; inheritance off.
const PRIVATE_SDDL: &str = "D:P(A;;FA;;;SY)(A;;FA;;;BA)(A;;FA;;;OW)";

fn wide(s: &OsStr) -> Vec<u16> {
    s.encode_wide().chain(std::iter::once(0)).collect()
}

/// Replaces `path`'s ACL with one only SYSTEM, Administrators and its owner pass.
///
/// # Errors
/// The OS error of the failing Win32 call.
pub fn make_private(path: &Path) -> io::Result<()> {
    let sddl = wide(OsStr::new(PRIVATE_SDDL));
    let file = wide(path.as_os_str());
    let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    // SAFETY: both strings are NUL-terminated UTF-16 that outlive the calls;
    // `sd` is allocated by the first call and freed with LocalFree below.
    unsafe {
        if ConvertStringSecurityDescriptorToSecurityDescriptorW(
            sddl.as_ptr(),
            SDDL_REVISION_1,
            &mut sd,
            std::ptr::null_mut(),
        ) == 0
        {
            return Err(io::Error::last_os_error());
        }
        let ok = SetFileSecurityW(
            file.as_ptr(),
            DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION,
            sd,
        );
        let err = io::Error::last_os_error();
        LocalFree(sd);
        if ok == 0 {
            return Err(err);
        }
    }
    Ok(())
}
