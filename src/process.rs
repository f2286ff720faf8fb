//! Facts about this process that the OS keeps: its open-file limit, the
//! host it runs on, and how the kernel schedules its threads.

use std::time::Duration;

/// Raises the soft limit on open files to the hard limit (as Go's runtime
/// and NGINX's `worker_rlimit_nofile` do) and returns the resulting limit.
pub fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every target
        let limit = lim.rlim_cur as u64;
        limit
    }
}

/// This machine's host name (`gethostname`), whether or not the shell
/// exported `$HOSTNAME`.
pub fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).into_owned();
    (!name.is_empty()).then_some(name)
}

/// Asks the kernel to schedule the calling thread, and the threads it starts
/// from now on (they inherit it), in slices of `slice`; `Duration::ZERO`
/// restores the kernel's default (`sched_base_slice_ns`, 0.7 to 3 ms).
///
/// Why: on a busy core, a thread woken by an event waits until the thread
/// running there has used up its slice. Linux's EEVDF scheduler (6.6+)
/// lets a thread that asks for a shorter slice (6.12+, `sched_runtime` of
/// `sched_setattr`, clamped to 0.1..100 ms) preempt on wake-up instead,
/// so an event leaves after a fraction of a millisecond rather than after
/// another process's whole slice. It does not change the CPU share, so it
/// needs no privilege. Older kernels accept the call and ignore the
/// slice. Policy, nice value and flags are kept as they are; a thread with
/// a real-time or deadline policy is left alone.
#[cfg(target_os = "linux")]
pub fn set_thread_slice(slice: Duration) -> std::io::Result<()> {
    let size = std::mem::size_of::<libc::sched_attr>();
    // SAFETY: sched_attr is plain old data; all zeros is a valid value.
    let mut attr: libc::sched_attr = unsafe { std::mem::zeroed() };
    // SAFETY: sched_getattr writes at most `size` bytes into `attr`, and
    // sched_setattr reads as many; pid 0 is the calling thread.
    unsafe {
        if libc::syscall(
            libc::SYS_sched_getattr,
            0,
            &mut attr as *mut libc::sched_attr,
            size as u32,
            0,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        if !matches!(attr.sched_policy as i32, libc::SCHED_OTHER | libc::SCHED_BATCH) {
            return Ok(());
        }
        attr.size = size as u32;
        attr.sched_runtime = slice.as_nanos().min(u64::MAX as u128) as u64;
        // Clamp flags need the larger sched_attr, which this one is not.
        attr.sched_flags &= !SCHED_FLAG_UTIL_CLAMP;
        if libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const libc::sched_attr, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Other systems: nothing to ask for.
#[cfg(not(target_os = "linux"))]
pub fn set_thread_slice(_slice: Duration) -> std::io::Result<()> {
    Ok(())
}

/// The slice the kernel schedules the calling thread with (`se.slice` of
/// `/proc/thread-self/sched`), if it says.
pub fn thread_slice() -> Option<Duration> {
    std::fs::read_to_string("/proc/thread-self/sched")
        .ok()?
        .lines()
        .find(|l| l.starts_with("se.slice"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_nanos)
}

/// `SCHED_FLAG_UTIL_CLAMP_MIN | SCHED_FLAG_UTIL_CLAMP_MAX`: only valid with
/// the larger sched_attr that carries the clamp values.
#[cfg(target_os = "linux")]
const SCHED_FLAG_UTIL_CLAMP: u64 = 0x20 | 0x40;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_name_is_known() {
        assert!(host_name().is_some_and(|h| !h.contains('\0')));
    }

    /// On a kernel that reports slices and honours custom ones (6.12+),
    /// the slice asked for is the one the thread and its children get,
    /// and zero brings the default back. Run on a thread of its own, so
    /// the test harness's threads keep theirs.
    #[test]
    fn a_thread_gets_the_slice_it_asks_for_and_its_children_inherit_it() {
        std::thread::spawn(|| {
            let default = thread_slice();
            set_thread_slice(Duration::from_micros(200)).unwrap();
            if !kernel_has_custom_slices() {
                return; // an older kernel accepts the call and ignores it
            }
            assert_eq!(thread_slice(), Some(Duration::from_micros(200)));
            let child = std::thread::spawn(thread_slice).join().unwrap();
            assert_eq!(child, Some(Duration::from_micros(200)));
            set_thread_slice(Duration::ZERO).unwrap();
            assert_eq!(thread_slice(), default);
        })
        .join()
        .unwrap();
    }

    /// Linux 6.12 or later (custom slices, and `se.slice` in
    /// `/proc/thread-self/sched`).
    fn kernel_has_custom_slices() -> bool {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut parts = release.split(|c: char| !c.is_ascii_digit());
        let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        (major, minor) >= (6, 12)
    }

    #[test]
    fn the_soft_limit_reaches_the_hard_one() {
        let limit = raise_fd_limit();
        assert!(limit >= 256, "{limit}");
    }
}
