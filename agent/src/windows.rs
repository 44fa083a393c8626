//! What Windows needs that Unix gets from modes and process groups.
//!
//! - Private files: Unix gives a key mode 0600; on Windows the file gets a
//!   protected ACL of its own. That lives with the one atomic writer every
//!   crate shares, `flor_vertex::file::make_private`.
//! - Children that die with their parent: a killed agent must not leave its
//!   vertex holding the rete's ports, and a stopped service must not leave its
//!   agents. Each such process puts itself in a job object that kills every
//!   member when its last handle closes, which the kernel does when the
//!   process ends, however it ends.
//!
//! The service entry point (`windows-service`) lives with the supervisor in
//! `crate::service`; this module is a leaf that imports nothing of the crate.
//!
//! Only these few calls are hand-written FFI (no maintained crate wraps just
//! them); windows-sys is linked anyway (async-io, quinn-udp). This is the one
//! module of the agent allowed `unsafe` (flor-vertex has one more, for the
//! private-file ACL, in `file/windows.rs`).
#![allow(unsafe_code)]

use std::io;

use windows_sys::Win32::System::JobObjects::{
    AssignProcessToJobObject, CreateJobObjectW, JobObjectExtendedLimitInformation,
    SetInformationJobObject, JOBOBJECT_EXTENDED_LIMIT_INFORMATION,
    JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
};
use windows_sys::Win32::System::Threading::GetCurrentProcess;

/// Puts this process in a job that kills every child it starts when it ends.
///
/// The handle is deliberately never closed: the kernel closes it when this
/// process exits, and that is the moment the children must go.
pub fn kill_children_with_me() {
    // SAFETY: plain Win32 calls on a handle this function owns; the limit
    // structure is zero-initialised plain data of the size passed.
    let ok = unsafe {
        let job = CreateJobObjectW(std::ptr::null(), std::ptr::null());
        if job.is_null() {
            false
        } else {
            let mut limits: JOBOBJECT_EXTENDED_LIMIT_INFORMATION = std::mem::zeroed();
            limits.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
            SetInformationJobObject(
                job,
                JobObjectExtendedLimitInformation,
                (&limits as *const JOBOBJECT_EXTENDED_LIMIT_INFORMATION).cast(),
                std::mem::size_of::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>() as u32,
            ) != 0
                && AssignProcessToJobObject(job, GetCurrentProcess()) != 0
        }
    };
    if !ok {
        log::warn!(
            "could not tie child processes to this one ({}); they may outlive it",
            io::Error::last_os_error()
        );
    }
}

/// `%ProgramData%` as Windows defines it (`C:\ProgramData`), whatever the
/// environment says: a service's environment need not carry it.
pub fn program_data() -> Option<std::path::PathBuf> {
    use std::os::windows::ffi::OsStringExt;
    use windows_sys::Win32::System::Com::CoTaskMemFree;
    use windows_sys::Win32::UI::Shell::{FOLDERID_ProgramData, SHGetKnownFolderPath};
    let mut p: windows_sys::core::PWSTR = std::ptr::null_mut();
    // SAFETY: on success `p` is a NUL-terminated UTF-16 string the shell
    // allocated; it is copied out and freed with CoTaskMemFree (also on failure,
    // as SHGetKnownFolderPath requires).
    unsafe {
        let hr = SHGetKnownFolderPath(&FOLDERID_ProgramData, 0, std::ptr::null_mut(), &mut p);
        let out = if hr >= 0 && !p.is_null() {
            let len = (0..).take_while(|&i| *p.add(i) != 0).count();
            Some(std::path::PathBuf::from(std::ffi::OsString::from_wide(
                std::slice::from_raw_parts(p, len),
            )))
        } else {
            None
        };
        CoTaskMemFree(p.cast());
        out
    }
}
