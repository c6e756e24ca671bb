//! The process's threads as the kernel lists them (`/proc/self/task`), read without allocating
//! (a stopped thread may hold the allocator's lock), and their names for messages.

use std::ffi::CStr;

/// This thread's id.
pub(crate) fn current_tid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}

/// Every thread id of the process, into `into` (cleared first) without allocating: ids past its
/// capacity are not stored, and `false` says some were left out.
pub(crate) fn list_tids(into: &mut Vec<u32>) -> bool {
    into.clear();
    const TASKS: &CStr = c"/proc/self/task";
    // SAFETY: a valid NUL-terminated path; the descriptor is closed below.
    let fd = unsafe {
        libc::open(
            TASKS.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return false;
    }
    let mut complete = true;
    let mut buffer = [0u64; 1024]; // 8 KiB, aligned for the kernel's records
    loop {
        // SAFETY: the kernel writes at most the buffer's length into it.
        let read = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                fd,
                buffer.as_mut_ptr(),
                std::mem::size_of_val(&buffer),
            )
        };
        if read <= 0 {
            complete &= read == 0;
            break;
        }
        let start = buffer.as_ptr().cast::<u8>();
        // SAFETY: the first `read` bytes of the buffer, which the kernel wrote.
        let bytes = unsafe { std::slice::from_raw_parts(start, read as usize) };
        let mut at = 0;
        // struct linux_dirent64 { u64 d_ino; i64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
        while at + 19 < bytes.len() {
            let length = u16::from_ne_bytes([bytes[at + 16], bytes[at + 17]]) as usize;
            if length == 0 {
                break;
            }
            let name = &bytes[at + 19..(at + length).min(bytes.len())];
            if let Some(tid) = parse_tid(name) {
                if into.len() < into.capacity() {
                    into.push(tid);
                } else {
                    complete = false;
                }
            }
            at += length;
        }
    }
    // SAFETY: the descriptor opened above.
    unsafe { libc::close(fd) };
    complete
}

/// A directory entry's NUL-terminated name as a thread id (`.` and `..` are none).
fn parse_tid(name: &[u8]) -> Option<u32> {
    let digits = name.split(|&b| b == 0).next()?;
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u32, |tid, &b| {
        b.is_ascii_digit()
            .then(|| tid.checked_mul(10)?.checked_add(u32::from(b - b'0')))
            .flatten()
    })
}

/// A thread's name (`/proc/self/task/TID/comm`), or `?` once it is gone.
pub(crate) fn thread_name(tid: u32) -> String {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
        .map(|name| name.trim_end().to_string())
        .unwrap_or_else(|_| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_this_thread_and_a_new_one_without_growing_the_list() {
        let (started, stop) = (std::sync::Barrier::new(2), std::sync::Barrier::new(2));
        std::thread::scope(|scope| {
            let other = scope.spawn(|| {
                let tid = current_tid();
                started.wait();
                stop.wait();
                tid
            });
            started.wait();
            let mut tids = Vec::with_capacity(256);
            assert!(list_tids(&mut tids));
            assert_eq!(tids.capacity(), 256);
            assert!(tids.contains(&current_tid()));
            stop.wait();
            let other = other.join().unwrap();
            assert!(tids.contains(&other), "{other} in {tids:?}");
            let mut one = Vec::with_capacity(1);
            assert!(!list_tids(&mut one), "two threads do not fit in one slot");
            assert_eq!(one.len(), 1);
        });
    }

    #[test]
    fn names_are_read_from_proc() {
        let name = std::thread::Builder::new()
            .name("named-worker".into())
            .spawn(|| thread_name(current_tid()))
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(name, "named-worker");
        assert_eq!(parse_tid(b"..\0"), None);
        assert_eq!(parse_tid(b"1234\0\0"), Some(1234));
    }
}
