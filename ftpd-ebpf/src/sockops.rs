//! sock_ops on ftpd's cgroup: counts established control connections per
//! client (for the XDP caps), closes a pinhole once its data connection is
//! established, and paces data sockets from the `PACING` map, again on every
//! RTT callback so that a rate the daemon changes reaches live sockets.

use aya_ebpf::{
    bindings::{
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB, BPF_SOCK_OPS_RTT_CB, BPF_SOCK_OPS_RTT_CB_FLAG, BPF_SOCK_OPS_STATE_CB,
        BPF_SOCK_OPS_STATE_CB_FLAG, BPF_TCP_CLOSE, SO_MAX_PACING_RATE, SOL_SOCKET,
    },
    helpers::bpf_setsockopt,
    macros::sock_ops,
    programs::SockOpsContext,
};
use ftpd_common::{ConfigSlot, Counter, IpKey};

use crate::maps::{CONN_COUNT, CONN_TOTAL, PACING, PASV_ALLOW, add, config, count, read};

const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;
const BPF_NOEXIST: u64 = 1;

#[sock_ops]
pub fn ftpd_sockops(ctx: SockOpsContext) -> u32 {
    let _ = try_sockops(&ctx);
    1
}

fn try_sockops(ctx: &SockOpsContext) -> Result<(), ()> {
    // Read every context field up front: LLVM otherwise merges loads from
    // different offsets into one computed-offset load, which the verifier
    // rejects ("dereference of modified ctx ptr", design/ebpf.md §9.3).
    // SAFETY: `ops` is the context pointer the kernel passed in.
    let (op, family, local_port, ip4, ip6) = unsafe {
        let o = ctx.ops;
        (
            core::ptr::read_volatile(&(*o).op),
            core::ptr::read_volatile(&(*o).family),
            core::ptr::read_volatile(&(*o).local_port),
            core::ptr::read_volatile(&(*o).remote_ip4),
            core::ptr::read_volatile(&(*o).remote_ip6),
        )
    };
    let new_state = ctx.arg(1);
    let key = match family {
        AF_INET => IpKey::v4(ip4.to_ne_bytes()),
        AF_INET6 => {
            let mut addr = [0u8; 16];
            let mut i = 0;
            while i < 4 {
                let b = ip6[i].to_ne_bytes();
                addr[i * 4] = b[0];
                addr[i * 4 + 1] = b[1];
                addr[i * 4 + 2] = b[2];
                addr[i * 4 + 3] = b[3];
                i += 1;
            }
            IpKey { addr }
        }
        _ => return Ok(()),
    };
    let control = config(ConfigSlot::ControlPort);
    let lo = config(ConfigSlot::PasvMin);
    let hi = config(ConfigSlot::PasvMax);
    let is_control = control != 0 && local_port == control;
    let is_data = lo != 0 && local_port >= lo && local_port <= hi;
    match op {
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => {
            if is_control {
                if CONN_COUNT.get_ptr_mut(&key).is_none() {
                    let _ = CONN_COUNT.insert(&key, &0, BPF_NOEXIST);
                }
                if let Some(p) = CONN_COUNT.get_ptr_mut(&key) {
                    add(p, 1);
                }
                if let Some(p) = CONN_TOTAL.get_ptr_mut(0) {
                    add(p, 1);
                }
                count(Counter::ControlEstablished, 1);
                let _ = ctx.set_cb_flags(BPF_SOCK_OPS_STATE_CB_FLAG as i32);
            } else if is_data {
                if PASV_ALLOW.remove(&local_port).is_ok() {
                    count(Counter::PinholeUsed, 1);
                }
                if pace(ctx, local_port) {
                    let _ = ctx.set_cb_flags(BPF_SOCK_OPS_RTT_CB_FLAG as i32);
                }
            }
        }
        BPF_SOCK_OPS_STATE_CB if is_control && new_state == BPF_TCP_CLOSE => {
            if let Some(p) = CONN_COUNT.get_ptr_mut(&key) {
                if read(p) > 0 {
                    add(p, u64::MAX);
                }
            }
            if let Some(p) = CONN_TOTAL.get_ptr_mut(0) {
                if read(p) > 0 {
                    add(p, u64::MAX);
                }
            }
            count(Counter::ControlClosed, 1);
        }
        BPF_SOCK_OPS_RTT_CB if is_data => {
            pace(ctx, local_port);
        }
        _ => {}
    }
    Ok(())
}

/// Applies `PACING[port]` to the socket; false when the port has no entry.
/// An entry of 0 marks a rate-limited session whose transfer has not started
/// yet (the data connection is often established before RETR arrives): the
/// socket gets RTT callbacks, and the rate applies on the first one after the
/// daemon writes it.
#[inline(always)]
fn pace(ctx: &SockOpsContext, port: u32) -> bool {
    // SAFETY: plain u32 value, copied out at once.
    let Some(rate) = (unsafe { PACING.get(&port) }).copied() else {
        return false;
    };
    if rate == 0 {
        return true;
    }
    let mut v: u32 = rate;
    // SAFETY: the helper reads 4 bytes from `v` (SO_MAX_PACING_RATE takes an int).
    let r = unsafe {
        bpf_setsockopt(ctx.ops.cast(), SOL_SOCKET as i32, SO_MAX_PACING_RATE as i32, (&raw mut v).cast(), 4)
    };
    count(if r == 0 { Counter::PacingApplied } else { Counter::PacingFailed }, 1);
    true
}
