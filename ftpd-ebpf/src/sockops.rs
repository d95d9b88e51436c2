//! sock_ops on ftpd's cgroup: counts established control connections per
//! client and per client network (for the XDP caps) and closes a pinhole once its data connection is
//! established. Rate limits are not here: the daemon sets the pacing rate on
//! each data socket itself, which works whatever port the socket has.

use aya_ebpf::{
    bindings::{
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB, BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG, BPF_TCP_CLOSE,
    },
    macros::sock_ops,
    programs::SockOpsContext,
};
use ftpd_common::{ConfigSlot, Counter, IpKey, PinholeKey};

use crate::maps::{CONN_COUNT, CONN_TOTAL, PASV_ALLOW, PREFIX_COUNT, add, config, count, network, read};

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
    // rejects ("dereference of modified ctx ptr": the context may only be
    // read at constant offsets).
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
    // The network is counted only when a cap uses it; the prefix lengths do
    // not change while the programs run, so a close finds the entry its
    // connection was counted in.
    let per_net = config(ConfigSlot::HardPerPrefix) != 0;
    match op {
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => {
            if is_control {
                if CONN_COUNT.get_ptr_mut(&key).is_none() {
                    let _ = CONN_COUNT.insert(&key, &0, BPF_NOEXIST);
                }
                if let Some(p) = CONN_COUNT.get_ptr_mut(&key) {
                    add(p, 1);
                }
                if per_net {
                    let net = network(&key);
                    if PREFIX_COUNT.get_ptr_mut(&net).is_none() {
                        let _ = PREFIX_COUNT.insert(&net, &0, BPF_NOEXIST);
                    }
                    if let Some(p) = PREFIX_COUNT.get_ptr_mut(&net) {
                        add(p, 1);
                    }
                }
                if let Some(p) = CONN_TOTAL.get_ptr_mut(0) {
                    add(p, 1);
                }
                count(Counter::ControlEstablished, 1);
                let _ = ctx.set_cb_flags(BPF_SOCK_OPS_STATE_CB_FLAG as i32);
            } else if is_data {
                // This client's pinhole on the port, else the port's
                // any-client one: used once.
                let mut hole = PinholeKey { port: local_port, _pad: 0, client: key };
                let mut used = PASV_ALLOW.remove(&hole).is_ok();
                if !used {
                    hole.client = PinholeKey::ANY;
                    used = PASV_ALLOW.remove(&hole).is_ok();
                }
                if used {
                    count(Counter::PinholeUsed, 1);
                }
            }
        }
        BPF_SOCK_OPS_STATE_CB if is_control && new_state == BPF_TCP_CLOSE => {
            if let Some(p) = CONN_COUNT.get_ptr_mut(&key) {
                if read(p) > 0 {
                    add(p, u64::MAX);
                }
            }
            if per_net {
                if let Some(p) = PREFIX_COUNT.get_ptr_mut(&network(&key)) {
                    if read(p) > 0 {
                        add(p, u64::MAX);
                    }
                }
            }
            if let Some(p) = CONN_TOTAL.get_ptr_mut(0) {
                if read(p) > 0 {
                    add(p, u64::MAX);
                }
            }
            count(Counter::ControlClosed, 1);
        }
        _ => {}
    }
    Ok(())
}
