//! The open-file limit. Every connection holds a descriptor, and the default
//! soft limit (often 1024) is far below what the kernel allows the process
//! (the hard limit), so `tessera serve` raises soft to hard at start; the
//! connection cap is then sized from the raised limit.

/// Raises the soft limit on open files to the hard limit; returns the soft
/// limit in force afterwards (unchanged if raising failed or is not
/// supported here).
#[cfg(unix)]
pub fn raise_to_hard() -> libc::rlim_t {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
    }
    lim.rlim_cur
}

/// Raising is not supported here: nothing changes.
#[cfg(not(unix))]
pub fn raise_to_hard() -> u64 {
    0
}

#[cfg(all(test, unix))]
mod tests {
    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        let soft = super::raise_to_hard();
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes the struct passed.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert_eq!(lim.rlim_cur, lim.rlim_max);
        assert_eq!(soft, lim.rlim_cur);
    }
}
