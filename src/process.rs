//! Facts about this process that the OS keeps: its open-file limit and the
//! host it runs on.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_name_is_known() {
        assert!(host_name().is_some_and(|h| !h.contains('\0')));
    }

    #[test]
    fn the_soft_limit_reaches_the_hard_one() {
        let limit = raise_fd_limit();
        assert!(limit >= 256, "{limit}");
    }
}
