/* NovaNet eBPF datapath: from-pod (tcx ingress of the host veth) and to-pod (tcx egress).
 *
 * Structs, constants and the pinned map declarations are GENERATED from
 * novanet_ebpf_policy/layouts.py and prepended by the loader (NV_GENERATED below); this file
 * holds only the logic; the IPv6 part is bpf/datapath6.c, inserted where NV_DATAPATH6 stands. Names carry an nv_ prefix: kernel headers leak macros
 * (e.g. `nop`) into BCC programs.
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/in.h>
#include <uapi/linux/tcp.h>
#include <uapi/linux/udp.h>

NV_GENERATED

#define NV_ID_HOST 1
#define NV_ID_WORLD 2

/* Profiling aid (bench/bpf_datapath.py --sections): built with -DNV_PROFILE_STOP=<n>, nv_from_pod
 * returns at point n, so bpf stats of each variant give the cost of each section. Compiled out
 * otherwise. */
#ifdef NV_PROFILE_STOP
#define NV_PROFILE_POINT(n) do { if (NV_PROFILE_STOP == (n)) return TC_ACT_OK; } while (0)
#else
#define NV_PROFILE_POINT(n) do { } while (0)
#endif
#define NV_ETH_P_ARP 0x0806
#define NV_IPPROTO_SCTP 132

struct nv_arp {
    u16 htype; u16 ptype; u8 hlen; u8 plen; u16 op;
    u8 sha[6]; u8 spa[4]; u8 tha[6]; u8 tpa[4];
} __attribute__((packed));

/* What the programs need from a packet, IPs numeric (host order), ports host order. An IPv6
 * packet (family NV_AF_INET6) has its addresses in saddr6/daddr6 (network order), saddr/daddr 0;
 * ttl is its hop limit, len its payload length plus the fixed header. */
struct nv_pkt {
    u32 saddr; u32 daddr; u16 sport; u16 dport; u8 proto; u8 tcp_flags; u8 ttl; u8 family; u32 len;
    u16 icmp_id;  /* echo identifier: tells one ping session from another in the flow table */
    u8 saddr6[16]; u8 daddr6[16];
};
#define NV_AF_INET6 10
#define NV_IPPROTO_ICMPV6 58
#define NV_ETH_P_IPV6 0x86DD

static __always_inline u64 nv_cfg(u32 k) {
    u64 *v = config.lookup(&k);
    return v ? *v : 0;
}

static __always_inline void nv_count(u32 reason) {
    if (reason >= NV_DROP_SLOTS) reason = 0;
    u64 *v = drops.lookup(&reason);
    if (v) *v += 1;
}

static __always_inline void nv_flowstat(u32 k) {
    u64 *v = flowstats.lookup(&k);
    if (v) *v += 1;
}

static __always_inline void nv_emit_ex(struct nv_pkt *p, u32 src_id, u32 dst_id, u8 verdict, u8 reason, u8 hook,
                                       u8 policy_dir, u32 policy_set) {
    struct nv_flow_event *e = flows.ringbuf_reserve(sizeof(struct nv_flow_event));
    if (!e) { nv_flowstat(NV_FS_LOST); return; }  /* consumer behind: counted, exported as lost */
    __builtin_memset(e, 0, sizeof(*e));
    e->family = p->family == NV_AF_INET6 ? NV_AF_INET6 : 2;
    e->verdict = verdict;
    e->drop_reason = reason;
    e->tcp_flags = p->tcp_flags;
    e->src_identity = src_id;
    e->dst_identity = dst_id;
    e->protocol = p->proto;
    e->hook = hook;
    e->policy_dir = policy_dir;
    e->policy_set = policy_set;
    e->src_port = p->sport;
    e->dst_port = p->dport;
    if (p->family == NV_AF_INET6) {
        __builtin_memcpy(e->src_ip, p->saddr6, 16);
        __builtin_memcpy(e->dst_ip, p->daddr6, 16);
    } else {
        u32 s = htonl(p->saddr), d = htonl(p->daddr);
        __builtin_memcpy(e->src_ip, &s, 4);
        __builtin_memcpy(e->dst_ip, &d, 4);
    }
    e->bytes = p->len;
    e->packets = 1;
    e->timestamp_ns = bpf_ktime_get_ns();
    flows.ringbuf_submit(e, 0);
    nv_flowstat(NV_FS_SUBMITTED);
}

static __always_inline void nv_emit(struct nv_pkt *p, u32 src_id, u32 dst_id, u8 verdict, u8 reason, u8 hook) {
    nv_emit_ex(p, src_id, dst_id, verdict, reason, hook, 0, 0);
}

static __always_inline void nv_traffic(u8 hook, u32 code, u32 len);

static __always_inline int nv_drop(struct nv_pkt *p, u32 src_id, u32 dst_id, u32 reason, u8 hook) {
    nv_count(reason);
    nv_traffic(hook, reason, p->len);
    nv_emit(p, src_id, dst_id, NV_VERDICT_DENY, reason, hook);
    return TC_ACT_SHOT;
}

/* The L4 fields of p (proto set) from the header at l4, both families. 0 = parsed; <0 = truncated. */
static __always_inline int nv_parse_l4(void *l4, void *end, struct nv_pkt *p) {
    if (p->proto == IPPROTO_TCP) {
        struct tcphdr *t = l4;
        if ((void *)(t + 1) > end) return -1;
        p->sport = ntohs(t->source);
        p->dport = ntohs(t->dest);
        p->tcp_flags = ((u8 *)t)[13];
    } else if (p->proto == IPPROTO_UDP) {
        struct udphdr *u = l4;
        if ((void *)(u + 1) > end) return -1;
        p->sport = ntohs(u->source);
        p->dport = ntohs(u->dest);
    } else if (p->proto == NV_IPPROTO_SCTP) {
        u8 *sc = l4;  /* common header: source port, destination port, verification tag, checksum */
        if ((void *)(sc + 12) > end) return -1;
        p->sport = ((u16)sc[0] << 8) | sc[1];
        p->dport = ((u16)sc[2] << 8) | sc[3];
    } else if (p->proto == IPPROTO_ICMP || p->proto == NV_IPPROTO_ICMPV6) {
        u8 *icmp = l4;
        if ((void *)(icmp + 8) > end) return -1;
        /* echo reply / request: ICMP 0/8, ICMPv6 129/128 (same header layout) */
        if (p->proto == IPPROTO_ICMP ? (icmp[0] == 0 || icmp[0] == 8) : (icmp[0] == 128 || icmp[0] == 129))
            p->icmp_id = ((u16)icmp[4] << 8) | icmp[5];
    }
    return 0;
}

/* 0 = parsed; <0 = truncated L3/L4 header. */
static __always_inline int nv_parse(struct iphdr *ip, void *end, struct nv_pkt *p) {
    p->saddr = ntohl(ip->saddr);
    p->daddr = ntohl(ip->daddr);
    p->proto = ip->protocol;
    p->ttl = ip->ttl;
    p->len = ntohs(ip->tot_len);
    p->sport = 0; p->dport = 0; p->tcp_flags = 0; p->family = 0; p->icmp_id = 0;
    if (ip->frag_off & htons(0x1FFF)) return 0;  /* later fragment: no L4 header */
    u32 ihl = ip->ihl * 4;
    if (ihl < sizeof(struct iphdr)) return -1;
    return nv_parse_l4((void *)ip + ihl, end, p);
}

/* ------------------------------------------------------------------ NetworkPolicy
 * The compiled form (novanet_core.policy): each local endpoint has, per direction, an isolated
 * flag and a policy set; a set is an LPM trie slice keyed (set, peer kind, peer, proto, port
 * prefix). An isolated direction admits a packet iff one of three exact lookups hits: any peer,
 * the peer's identity, or the CIDR id its address resolves to in policy_cidrs (longest ipBlock
 * prefix holding it; excepts are prefixes of their own whose ids the set simply lacks).
 * Everything that sends from or delivers to a local pod decides through nv_policy_decide()
 * (overlay tunnel-ingress included), so same-node and cross-node traffic get the same verdicts:
 * the source's egress where the source is local, the destination's ingress where it is local. */

struct nv_verdict { u32 set; u8 dir; };

static __always_inline void nv_be32(u8 *b, u32 v) {
    b[0] = v >> 24; b[1] = v >> 16; b[2] = v >> 8; b[3] = v;
}

static __always_inline int nv_rule_hit(struct nv_prule_key *k, u8 kind, u32 peer) {
    k->kind = kind;
    nv_be32(k->peer, peer);
    struct nv_prule *hit = policy_rules.lookup(k);
    return hit != 0;
}

static __always_inline struct nv_pcidr *nv_peer_cidr6(const u8 *peer_ip);  /* bpf/datapath6.c */

/* 1 when a rule of policy set `set` admits this peer on proto/port. The peer's address: peer_ip
 * (IPv4), or peer_ip6 (IPv6, network order) when that is set. Identities are per pod, so only the
 * CIDR step differs by family. */
static __always_inline int nv_set_allows(u32 set, u32 peer_id, u32 peer_ip, const u8 *peer_ip6, u8 proto,
                                         u16 port) {
    struct nv_prule_key k = {};
    k.prefixlen = NV_RULE_KEY_BITS;
    nv_be32(k.set_id, set);
    k.protocol = proto;
    k.port[0] = port >> 8;
    k.port[1] = port & 0xff;
    if (nv_rule_hit(&k, NV_PEER_ANY, 0)) return 1;
    if (peer_id >= 256 && nv_rule_hit(&k, NV_PEER_IDENTITY, peer_id)) return 1;  /* pods only */
    struct nv_pcidr *c;
    if (peer_ip6) {
        c = nv_peer_cidr6(peer_ip6);
    } else {
        struct nv_pcidr_key ck = {};
        ck.prefixlen = 32;
        nv_be32(ck.ip, peer_ip);
        c = policy_cidrs.lookup(&ck);
    }
    return c && nv_rule_hit(&k, NV_PEER_CIDR, c->cidr_id);
}

/* One side of a connection, for the local endpoint whose ep_policy entry is ep (either family's
 * map). An endpoint the agent has not programmed yet falls back to CONFIG DEFAULT_DENY (fail
 * closed in default-deny clusters). */
static __always_inline u32 nv_side_ep(struct nv_ep_policy *ep, int ingress, u32 peer_id, u32 peer_ip,
                                      const u8 *peer_ip6, u8 proto, u16 dport, struct nv_verdict *v) {
    if (!ep) {
        if (!nv_cfg(NV_CFG_DEFAULT_DENY)) return 0;
        v->dir = NV_PDIR_DEFAULT;
        return NV_DROP_POLICY_DENIED;
    }
    if (ep->flags & NV_EPF_UNPROGRAMMED) {  /* its policy did not fit the maps: fail closed */
        v->dir = ingress ? NV_PDIR_INGRESS : NV_PDIR_EGRESS;
        return NV_DROP_POLICY_MAP_FULL;
    }
    if (!(ep->flags & (ingress ? NV_EPF_INGRESS_ISOLATED : NV_EPF_EGRESS_ISOLATED))) return 0;
    u32 set = ingress ? ep->ingress_set : ep->egress_set;
    if (nv_set_allows(set, peer_id, peer_ip, peer_ip6, proto, dport)) return 0;
    v->dir = ingress ? NV_PDIR_INGRESS : NV_PDIR_EGRESS;
    v->set = set;
    return NV_DROP_POLICY_DENIED;
}

static __always_inline u32 nv_side(u32 ep_ip, int ingress, u32 peer_id, u32 peer_ip, u8 proto, u16 dport,
                                   struct nv_verdict *v) {
    struct nv_endpoint_key k = { .ip = ep_ip };
    return nv_side_ep(ep_policy.lookup(&k), ingress, peer_id, peer_ip, 0, proto, dport, v);
}

/* Its policy did not fit the maps: the egress map (per identity, from the policy programmed
 * before) must not decide for it either. */
static __always_inline int nv_unprogrammed(u32 ep_ip) {
    struct nv_endpoint_key k = { .ip = ep_ip };
    struct nv_ep_policy *ep = ep_policy.lookup(&k);
    return ep && (ep->flags & NV_EPF_UNPROGRAMMED);
}

/* -1 = no entry for this identity pair; else the action. Probes (proto,port), (proto,*), (*,*). */
static __always_inline int nv_policy_pair(u32 src, u32 dst, u8 proto, u16 port) {
    struct nv_policy_key k = {};
    k.src_identity = src; k.dst_identity = dst; k.protocol = proto; k.dst_port = port;
    struct nv_policy *v = policies.lookup(&k);
    if (v) return v->action;
    if (port) { k.dst_port = 0; v = policies.lookup(&k); if (v) return v->action; }
    if (proto) { k.protocol = 0; k.dst_port = 0; v = policies.lookup(&k); if (v) return v->action; }
    return -1;
}

/* Manual identity-pair overrides (`policies`, the original NovaNet map): (src,dst), (src,*), (*,dst);
 * the first hit wins. -1 = none, 0 = allowed, else the drop reason. Identities: both families. */
static __always_inline int nv_policy_override(u32 osrc_id, u32 odst_id, u8 proto, u16 dport) {
    if (!nv_cfg(NV_CFG_POLICY_COUNT)) return -1;
    int a = nv_policy_pair(osrc_id, odst_id, proto, dport);
    if (a < 0) a = nv_policy_pair(osrc_id, 0, proto, dport);
    if (a < 0) a = nv_policy_pair(0, odst_id, proto, dport);
    if (a == NV_ACTION_ALLOW) return 0;
    if (a == NV_ACTION_DENY) return NV_DROP_POLICY_DENY_RULE;
    return -1;
}

/* The verdict (0 = allowed, else the drop reason) for a connection osrc -> odst to port dport,
 * always in the connection's ORIGINAL orientation. eg_local: osrc is a local pod (enforce its
 * egress here); in_local: odst is a local pod (enforce its ingress here). */
static __always_inline u32 nv_policy_decide(u32 osrc_id, u32 odst_id, u32 osaddr, u32 odaddr, u8 proto, u16 dport,
                                            int eg_local, int in_local, int from_host, struct nv_verdict *v) {
    v->dir = NV_PDIR_NONE;
    v->set = 0;
    int o = nv_policy_override(osrc_id, odst_id, proto, dport);
    if (o >= 0) return o;
    if (from_host) return 0;  /* the node reaches its pods (kubelet probes) unless a rule denies */
    u32 r = 0;
    if (eg_local) r = nv_side(osaddr, 0, odst_id, odaddr, proto, dport, v);
    if (!r && in_local) r = nv_side(odaddr, 1, osrc_id, osaddr, proto, dport, v);
    return r;
}

static __always_inline int nv_drop_policy(struct nv_pkt *p, u32 src_id, u32 dst_id, u32 reason, u8 hook,
                                          struct nv_verdict *v) {
    nv_count(reason);
    nv_traffic(hook, reason, p->len);
    nv_emit_ex(p, src_id, dst_id, NV_VERDICT_DENY, reason, hook, v->dir, v->set);
    return TC_ACT_SHOT;
}

static __always_inline int nv_is_local(struct nv_endpoint *e) {
    return e->ifindex && (e->node_ip == 0 || e->node_ip == (u32)nv_cfg(NV_CFG_NODE_IP));
}

/* ------------------------------------------------------------------ observability: counters, egress
 * `traffic`: per direction (hook) packets and bytes forwarded, dropped per reason, and connections
 * admitted. `egress`: the rule for traffic leaving the cluster, longest prefix first, the source's
 * own identity before the any-source entry (novanet_ebpf_policy/egressmap.py compiles it); every
 * packet that matches a rule is counted in `egress_stats[rule]`. */

static __always_inline void nv_traffic(u8 hook, u32 code, u32 len) {
    u32 k = (hook & 1) * NV_TRAFFIC_CODES + (code < NV_TRAFFIC_CODES ? code : 0);
    struct nv_counter *c = traffic.lookup(&k);
    if (c) { c->packets += 1; c->bytes += len; }  /* per CPU: no atomics needed */
}

static __always_inline struct nv_egress *nv_egress_lookup(u32 src_id, u32 daddr, u32 len) {
    struct nv_egress_key k = {};
    k.prefixlen = 64;
    nv_be32(k.src_identity, src_id);
    nv_be32(k.dst_ip, daddr);
    struct nv_egress *e = egress.lookup(&k);
    if (!e) {
        nv_be32(k.src_identity, 0);
        e = egress.lookup(&k);
    }
    if (e) {
        u32 slot = e->rule;
        struct nv_counter *c = egress_stats.lookup(&slot);
        if (c) { c->packets += 1; c->bytes += len; }
    }
    return e;
}

/* The egress map decides alone for a source identity's own entries; a PORTS entry leaves the port
 * to the pod's NetworkPolicy set, and the any-source entry leaves isolation to NetworkPolicy. */
static __always_inline int nv_egress_decisive(struct nv_egress *e) {
    return e && !(e->flags & (NV_EGRESS_F_PORTS | NV_EGRESS_F_DEFAULT));
}
/* ------------------------------------------------------------------ end observability */

static __always_inline int nv_in_cidr(u32 addr, u32 net_key, u32 len_key) {
    u32 len = nv_cfg(len_key);
    if (len == 0 || len > 32) return 0;
    u32 mask = 0xFFFFFFFFu << (32 - len);
    return (addr & mask) == ((u32)nv_cfg(net_key) & mask);
}

/* Conntrack-lite: a flow seen (either direction) under the current policy revision skips the
 * policy lookups and emits no event; anything else is decided. Both directions are inserted when
 * a flow is admitted, the reverse one flagged REPLY, so replies never need a reverse allow rule.
 * After a policy change (revision bump) a REPLY entry re-decides the flow's ORIGINAL direction,
 * never the reply as if it were a new connection.
 *
 * Admission fails closed: the ct map is a fixed-size hash (flowtable.py says why), so when it is
 * full a new flow gets no entry, and a flow without entries is dropped by the caller with
 * FLOW_TABLE_FULL instead of being let through untracked. Both directions or neither: a forward
 * entry this call created is taken out again if its reverse did not fit (one that already
 * existed, an established flow re-decided after a policy change, stays). 0 = admitted.
 * Services flags: reply_flags (SVC) go on the REPLY entry only (and SVC_FWD, its counterpart, on
 * the other one), both_flags (VIA_STACK) on both. */
/* A same-node destination's delivery, copied into its direction's entry for the fast path
 * (0: not cached, the fast path looks the endpoint up). */
static __always_inline void nv_ct_dst(struct nv_flow_state *st, struct nv_endpoint *dst) {
    st->dst_ifindex = dst ? dst->ifindex : 0;
    if (dst) {
        __builtin_memcpy(st->dst_mac, dst->mac, 6);
        __builtin_memcpy(st->dst_mac + 6, dst->host_mac, 6);
    } else {
        __builtin_memset(st->dst_mac, 0, 12);
    }
}

static __always_inline int nv_ct_admit(struct nv_flow_key *k, u32 rev, int k_is_reply, int fresh,
                                       u32 reply_flags, u32 both_flags,
                                       u32 k_ifindex, u32 k_identity, u32 r_ifindex, u32 r_identity,
                                       struct nv_endpoint *k_dst, struct nv_endpoint *r_dst) {
    struct nv_flow_state st = {};
    st.last_seen_ns = bpf_ktime_get_ns();
    st.policy_revision = rev;
    u32 fwd_flags = (reply_flags & NV_CTF_SVC) ? NV_CTF_SVC_FWD : 0;
    st.flags = (k_is_reply ? NV_CTF_REPLY | reply_flags : fwd_flags) | both_flags;
    st.ifindex = k_ifindex;
    st.identity = k_identity;
    nv_ct_dst(&st, k_dst);
    if (ct.update(k, &st) < 0) return -1;
    struct nv_flow_key r = {};
    r.src_ip = k->dst_ip; r.dst_ip = k->src_ip; r.src_port = k->dst_port; r.dst_port = k->src_port;
    r.protocol = k->protocol;
    st.flags = (k_is_reply ? fwd_flags : NV_CTF_REPLY | reply_flags) | both_flags;
    st.ifindex = r_ifindex;
    st.identity = r_identity;
    nv_ct_dst(&st, r_dst);
    if (ct.update(&r, &st) < 0) {
        if (fresh) ct.delete(k);
        return -1;
    }
    return 0;
}

/* An established flow's idle clock, for the dataplane's sweeper: written at most once a second
 * (a write per packet would bounce the entry's cache line between CPUs for nothing). */
static __always_inline void nv_ct_touch(struct nv_flow_state *st) {
    /* the coarse clock (same CLOCK_MONOTONIC base, last tick) is a memory read, not a clock
     * source read: this runs for every packet of an established flow */
    u64 now = bpf_ktime_get_coarse_ns();
    if (now - st->last_seen_ns > 1000000000ULL) st->last_seen_ns = now;
}

static __always_inline void nv_flow_key(struct nv_flow_key *k, struct nv_pkt *p) {
    k->src_ip = p->saddr; k->dst_ip = p->daddr; k->src_port = p->sport; k->dst_port = p->dport;
    if (p->proto == IPPROTO_ICMP) { k->src_port = p->icmp_id; k->dst_port = p->icmp_id; }
    k->protocol = p->proto; k->pad[0] = 0; k->pad[1] = 0; k->pad[2] = 0;
}

/* A TCP SYN without ACK opens a new connection. The flow-table entries of its tuple may be an
 * earlier connection's that reused the client port (a RST or FIN does not take them out; the
 * sweeper does, once they are idle), and that connection's flags are not this one's: a flow to
 * the pod IP after one through a ClusterIP kept the reverse rewrite (SVC) and the reverse, a
 * kube-proxy flow lost its place on the stack (VIA_STACK). The replies then reached the client
 * from the wrong address and were reset. So an opening SYN is always decided afresh. */
static __always_inline int nv_tcp_opens(struct nv_pkt *p) {
    return p->proto == IPPROTO_TCP && (p->tcp_flags & 0x12) == 0x02;
}

/* Answer the pod's ARP requests (for its gateway, or anything else) with the host veth MAC:
 * no proxy-ARP or neighbour entries in the kernel. */
static __always_inline int nv_arp_reply(struct __sk_buff *skb) {
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    struct nv_arp *arp = (void *)(eth + 1);
    if ((void *)(arp + 1) > end) return TC_ACT_OK;
    if (arp->op != htons(1) || arp->ptype != htons(ETH_P_IP) || arp->hlen != 6 || arp->plen != 4)
        return TC_ACT_OK;
    u32 spa, tpa;
    __builtin_memcpy(&spa, arp->spa, 4);
    __builtin_memcpy(&tpa, arp->tpa, 4);
    if (spa == tpa || spa == 0) return TC_ACT_OK;  /* gratuitous / duplicate address probe */
    struct nv_endpoint_key k = { .ip = ntohl(spa) };
    struct nv_endpoint *src = endpoints.lookup(&k);
    if (!src) return TC_ACT_OK;
    u8 hmac[6];
    __builtin_memcpy(hmac, src->host_mac, 6);
    __builtin_memcpy(arp->tha, arp->sha, 6);
    __builtin_memcpy(arp->tpa, &spa, 4);
    __builtin_memcpy(arp->sha, hmac, 6);
    __builtin_memcpy(arp->spa, &tpa, 4);
    arp->op = htons(2);
    __builtin_memcpy(eth->h_dest, eth->h_source, 6);
    __builtin_memcpy(eth->h_source, hmac, 6);
    return bpf_redirect(skb->ifindex, 0);  /* back out of the host veth, into the pod */
}

/* ------------------------------------------------------------------ overlay: tunnel hook
 * (overlay helper's block; contract in novanet_core/bpf/layouts.py and docs/overlay.md). The
 * tunnel programs themselves belong to the tunnel plugins (novanet-vxlan, novanet-geneve). */

/* Overlay: an address inside the cluster CIDR that no endpoint entry knows has nowhere to go. */
static __always_inline int nv_overlay_unknown(u32 daddr) {
    return nv_cfg(NV_CFG_MODE) == 0 && nv_in_cidr(daddr, NV_CFG_CLUSTER_CIDR_IP, NV_CFG_CLUSTER_CIDR_PREFIX_LEN);
}

/* A remote endpoint in overlay mode: hand the packet to the active tunnel plugin through the shared
 * program array. No tunnels entry for its node, or an empty slot (the tail call falls through):
 * NO_TUNNEL, with a flow event. */
static __always_inline int nv_tunnel_encap(struct __sk_buff *skb, struct nv_pkt *p, u32 src_id, u32 dst_id,
                                           u32 node_ip) {
    struct nv_tunnel_key tk = { .node_ip = node_ip };
    if (!tunnels.lookup(&tk)) return nv_drop(p, src_id, dst_id, NV_DROP_NO_TUNNEL, NV_HOOK_FROM_POD);
    skb->cb[0] = NV_CB_ENCAP_MAGIC;
    skb->cb[1] = src_id;
    skb->cb[2] = dst_id;
    skb->cb[3] = node_ip;
    tunnel_progs.call(skb, NV_TUNNEL_SLOT_ENCAP);
    return nv_drop(p, src_id, dst_id, NV_DROP_NO_TUNNEL, NV_HOOK_FROM_POD);
}

/* to-pod: a packet a tunnel ingress program decapsulated may carry (skb->cb, see the contract) the
 * source identity the sending node stamped; it wins over the endpoints map's possibly stale entry.
 * Honoured only with the tunnel mark, the magic, the same inner source and the same ingress device. */
static __always_inline void nv_tunnel_identity(struct __sk_buff *skb, u32 saddr, u32 *src_id) {
    if (skb->cb[0] != NV_CB_DECAP_MAGIC || !(skb->mark & NV_TUNNEL_MARK) || skb->cb[2] != saddr ||
        skb->cb[3] != skb->ingress_ifindex)
        return;
    *src_id = skb->cb[1];
    skb->cb[0] = 0;
}
/* ------------------------------------------------------------------ end overlay: tunnel hook */

/* Anti-spoofing: the source address's endpoint must be the one behind the veth the packet came
 * in on. Without this a pod that put another pod's address (local, or a remote pod's: an entry
 * with no veth) on its interface was given that pod's identity, and its allow rules. */
static __always_inline int nv_src_owned(struct nv_endpoint *src, struct __sk_buff *skb) {
    return src->ifindex != 0 && src->ifindex == skb->ifindex;
}

/* ------------------------------------------------------------------ established-flow fast path
 * A packet of a flow admitted under the current policy revision, arriving on the veth its
 * direction was admitted from (the source's ownership of its address was checked then, and the
 * entry carries the source identity), needs neither the source's endpoint lookup nor any policy
 * lookup: one flow-table lookup, the destination's endpoint lookup, the forwarding. Everything
 * else (new flows, re-decisions, migrated entries without a veth, unknown destinations, TTL expiry)
 * returns NV_FULL_PATH and is decided by the full program, which also writes the fields used here.
 * Profile and figures: bench/bpf_datapath.py --sections, docs/benchmarks.md. */
#define NV_FULL_PATH (-2)  /* not a tc verdict: "decide this packet in full" */

/* The same-node delivery: L2 rewrite, TTL as a router does, into the pod netns (no host stack). */
static __always_inline int nv_redirect_l2(struct __sk_buff *skb, u32 ifindex, u8 *mac);

static __always_inline int nv_redirect_local(struct __sk_buff *skb, struct nv_pkt *p, struct nv_endpoint *dst,
                                             u32 src_id, u32 dst_id, u8 hook) {
    if (p->ttl <= 1) return nv_drop(p, src_id, dst_id, NV_DROP_TTL_EXCEEDED, hook);
    nv_traffic(hook, NV_TRAFFIC_FORWARDED, p->len);
    u32 ifindex = dst->ifindex;
    u8 mac[12];  /* off the map value before the packet is written (services.c rewrites first) */
    __builtin_memcpy(mac, dst->mac, 6);
    __builtin_memcpy(mac + 6, dst->host_mac, 6);
    return nv_redirect_l2(skb, ifindex, mac);
}

/* mac: the destination pod's MAC, then the host veth's (the new L2 source) */
static __always_inline int nv_redirect_l2(struct __sk_buff *skb, u32 ifindex, u8 *mac) {
    /* map helpers do not invalidate packet pointers, but re-derive them for the verifier */
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end) return TC_ACT_SHOT;
    __builtin_memcpy(eth->h_dest, mac, 6);
    __builtin_memcpy(eth->h_source, mac + 6, 6);
    u32 csum = ip->check;
    csum += htons(0x0100);  /* as ip_decrease_ttl() */
    ip->check = (u16)(csum + (csum >= 0xFFFF));
    ip->ttl--;
    return bpf_redirect_peer(ifindex, 0);
}

static __always_inline int nv_from_pod_fast(struct __sk_buff *skb, struct nv_pkt *p) {
    struct nv_flow_key fk;
    nv_flow_key(&fk, p);
    struct nv_flow_state *st = ct.lookup(&fk);
    /* Services flows (a reply to reverse-translate, a flow kube-proxy translated on the stack)
     * are the full path's */
    if (!st || st->policy_revision != (u32)nv_cfg(NV_CFG_POLICY_REVISION) || !st->ifindex ||
        st->ifindex != skb->ifindex || (st->flags & (NV_CTF_SVC | NV_CTF_SVC_FWD | NV_CTF_VIA_STACK | NV_CTF_SHAPED)) ||
        nv_tcp_opens(p))
        return NV_FULL_PATH;
    NV_PROFILE_POINT(2);
#ifndef NV_NO_DST_COPY  /* profiling aid: the endpoint lookup instead (bench/bpf_datapath.py --dst-copy) */
    if (st->dst_ifindex) {  /* a same-node destination, copied when the flow was decided */
        if (p->ttl <= 1) return NV_FULL_PATH;
        NV_PROFILE_POINT(3);
        nv_ct_touch(st);
        nv_traffic(NV_HOOK_FROM_POD, NV_TRAFFIC_FORWARDED, p->len);
        u32 ifindex = st->dst_ifindex;
        u8 mac[12];
        __builtin_memcpy(mac, st->dst_mac, 12);
        return nv_redirect_l2(skb, ifindex, mac);
    }
#endif
    struct nv_endpoint_key dk = { .ip = p->daddr };
    struct nv_endpoint *dst = endpoints.lookup(&dk);
    if (!dst) return NV_FULL_PATH;
    NV_PROFILE_POINT(3);
    if (dst->ifindex && (dst->node_ip == 0 || dst->node_ip == (u32)nv_cfg(NV_CFG_NODE_IP))) {
        if (p->ttl <= 1) return NV_FULL_PATH;
        nv_ct_touch(st);
        return nv_redirect_local(skb, p, dst, st->identity, dst->identity, NV_HOOK_FROM_POD);
    }
    nv_ct_touch(st);
    nv_traffic(NV_HOOK_FROM_POD, NV_TRAFFIC_FORWARDED, p->len);
    if (nv_cfg(NV_CFG_MODE) == 0) return nv_tunnel_encap(skb, p, st->identity, dst->identity, dst->node_ip);
    return TC_ACT_OK;  /* native: the kernel routes */
}

/* to-pod: an established flow's packet passes whatever the endpoints say (the full path, too,
 * lets it through once the flow entry is current), so the flow-table lookup comes first. */
static __always_inline int nv_to_pod_fast(struct nv_pkt *p) {
    struct nv_flow_key fk;
    nv_flow_key(&fk, p);
    struct nv_flow_state *st = ct.lookup(&fk);
    if (!st || st->policy_revision != (u32)nv_cfg(NV_CFG_POLICY_REVISION) || (st->flags & NV_CTF_SVC) ||
        nv_tcp_opens(p))
        return NV_FULL_PATH;  /* a translated flow's packets are rewritten on the full path */
    nv_ct_touch(st);
    nv_traffic(NV_HOOK_TO_POD, NV_TRAFFIC_FORWARDED, p->len);
    return TC_ACT_OK;
}
/* ------------------------------------------------------------------ end established-flow fast path */

/* ------------------------------------------------------------------ bandwidth
 * A pod with a bandwidth limit (EndpointFlag.SHAPED) is shaped by the chained bandwidth plugin's
 * qdiscs on its host veth: a tbf on the veth's egress (to the pod) and, for what the pod sends, a
 * classic tc filter on the veth's ingress redirecting to an ifb with a tbf. redirect_peer and
 * redirects from this hook pass both, so every packet from or to such a pod is forwarded by the
 * node's stack instead (policy is still decided here first): conntrack then sees both directions
 * (kube-proxy's INVALID drop), the stack delivers through the veth's egress, and what the pod sends
 * leaves this tcx hook with TCX_NEXT: tcx runs before the classic tc filters, and TCX_PASS
 * (TC_ACT_OK) would skip them. A flow with a shaped end carries NV_CTF_SHAPED, which keeps it off
 * the fast path; flows of pods without limits pay nothing. */
static __always_inline u32 nv_shaped_ct(struct nv_endpoint *a, struct nv_endpoint *b) {
    return ((a ? a->flags : 0) | (b ? b->flags : 0)) & NV_ENDPOINT_F_SHAPED ? NV_CTF_SHAPED : 0;
}

/* The verdict that hands a packet from a pod on to the node's stack. */
static __always_inline int nv_to_stack(struct nv_endpoint *src) {
    return (src->flags & NV_ENDPOINT_F_SHAPED) ? TC_ACT_UNSPEC /* TCX_NEXT */ : TC_ACT_OK;
}
/* ------------------------------------------------------------------ end bandwidth */

NV_SERVICES

NV_DATAPATH6

NV_SERVICES6

int nv_from_pod(struct __sk_buff *skb) {
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end) return TC_ACT_OK;
    if (eth->h_proto == htons(NV_ETH_P_ARP)) return nv_arp_reply(skb);
    if (eth->h_proto == htons(NV_ETH_P_IPV6)) {
        ipv6_progs.call(skb, 0);  /* nv_from_pod6_prog (bpf/datapath6.c); the dataplane fills the slot
                                     before it attaches this program, so this fails closed only */
        nv_count(NV_DROP_NO_ROUTE);
        return TC_ACT_SHOT;
    }
    if (eth->h_proto != htons(ETH_P_IP)) return TC_ACT_OK;
    struct iphdr *ip = (void *)(eth + 1);
    struct nv_pkt p = {};
    if ((void *)(ip + 1) > end) {
        nv_count(NV_DROP_MALFORMED);
        nv_traffic(NV_HOOK_FROM_POD, NV_DROP_MALFORMED, 0);
        return TC_ACT_SHOT;
    }
    if (nv_parse(ip, end, &p) < 0) return nv_drop(&p, 0, 0, NV_DROP_MALFORMED, NV_HOOK_FROM_POD);
    NV_PROFILE_POINT(1);
    int fast = nv_from_pod_fast(skb, &p);
    if (fast != NV_FULL_PATH) return fast;

    struct nv_endpoint_key sk = { .ip = p.saddr };
    struct nv_endpoint *src = endpoints.lookup(&sk);
    if (!src || !nv_src_owned(src, skb))  /* spoofed (an unknown or another pod's address) or stale */
        return nv_drop(&p, 0, 0, NV_DROP_NO_IDENTITY, NV_HOOK_FROM_POD);
    u32 src_id = src->identity;

    struct nv_endpoint_key dk = { .ip = p.daddr };
    struct nv_endpoint *dst = endpoints.lookup(&dk);
    u32 l4off = NV_IP_OFF + ip->ihl * 4;
    struct nv_nat rnat = {};
    int svc_rev = 0;      /* a reverse rewrite is due after policy (Services section) */
    u32 svc_reply = 0;    /* NV_CTF_SVC for a flow translated here */
    int opens = nv_tcp_opens(&p);  /* a new connection: whatever entries its tuple has are stale */
    if (!dst && nv_svc_candidate(p.daddr)) {
        int verdict = TC_ACT_SHOT;
        int r = nv_svc_from_pod(skb, &p, l4off, src_id, &rnat, &verdict);
        if (r == NV_SVC_ANSWERED) return verdict;
        if (r == NV_SVC_REVERSE) svc_rev = 1;
        if (r == NV_SVC_NEW) opens = 1;  /* UDP/SCTP too: a new translation's entries are its own */
        if (r == NV_SVC_FORWARD || r == NV_SVC_NEW) {
            svc_reply = NV_CTF_SVC;
            dk.ip = p.daddr;
            dst = endpoints.lookup(&dk);
        }
    }
    u32 dst_id = dst ? dst->identity : NV_ID_WORLD;
    struct nv_egress *eg = 0;
    if (!dst) {
        u32 gw = nv_cfg(NV_CFG_GATEWAY_IP);
        if (p.daddr == gw || p.daddr == (u32)nv_cfg(NV_CFG_NODE_IP)) {
            dst_id = NV_ID_HOST;
        } else if (nv_in_cidr(p.daddr, NV_CFG_POD_CIDR_IP, NV_CFG_POD_CIDR_PREFIX_LEN) ||
                   nv_overlay_unknown(p.daddr)) {  /* overlay: see the tunnel hook block */
            return nv_drop(&p, src_id, 0, NV_DROP_NO_ROUTE, NV_HOOK_FROM_POD);  /* no such pod here */
        } else if (!nv_in_cidr(p.daddr, NV_CFG_CLUSTER_CIDR_IP, NV_CFG_CLUSTER_CIDR_PREFIX_LEN) &&
                   !nv_kp_frontend(p.daddr)) {
            /* leaving the cluster: the egress map. Not a ClusterIP kube-proxy translates: that
             * connection goes to a backend, decided on the translated packet (nv_to_pod). */
            eg = nv_egress_lookup(src_id, p.daddr, p.len);
        }
    }

    u32 rev = nv_cfg(NV_CFG_POLICY_REVISION);
    struct nv_flow_key fk;
    nv_flow_key(&fk, &p);
    struct nv_flow_state *st = opens ? 0 : ct.lookup(&fk);  /* an opening SYN: as if none */
    if (st && (st->flags & NV_CTF_SVC_FWD) && !svc_reply) {
        /* a per-packet translation's tuple, but this packet went straight to the backend (the
         * client port reused, e.g. by a UDP socket talking to the pod IP, or a socket-level
         * translation): a new flow, whose replies must not get the frontend's address */
        nv_svc_forget(&fk);
        st = 0;
    }
    if (st && st->policy_revision == rev) nv_ct_touch(st);
    u32 ctflags = 0;
    if (!st || st->policy_revision != rev) {
        int reply = st && (st->flags & NV_CTF_REPLY);
        int dst_local = dst && nv_is_local(dst);
        struct nv_verdict v = {};
        u32 reason;
        /* `egress` map: DENY drops a new connection (never a reply); ALLOW/SNAT of the identity's
         * own entry stand for its egress NetworkPolicy (SNAT itself is the kernel's masquerade). */
        if (eg && eg->action == NV_EGRESS_DENY && !reply) {
            reason = NV_DROP_POLICY_DENIED;
            v.dir = NV_PDIR_EGRESS;
            v.set = eg->rule;
        } else if (reply)  /* the original was dst -> this pod */
            reason = nv_policy_decide(dst_id, src_id, p.daddr, p.saddr, p.proto, p.sport, dst_local, 1,
                                      dst_id == NV_ID_HOST, &v);
        else  /* a ClusterIP kube-proxy will translate: the egress is decided on the translated packet */
            reason = nv_policy_decide(src_id, dst_id, p.saddr, p.daddr, p.proto, p.dport,
                                      (!nv_egress_decisive(eg) || nv_unprogrammed(p.saddr)) && !nv_kp_frontend(p.daddr),
                                      dst_local, 0, &v);
        if (reason) return nv_drop_policy(&p, src_id, dst_id, reason, NV_HOOK_FROM_POD, &v);
        /* a re-decided flow keeps its Services flags; a reply whose entry was evicted finds its
         * reverse rewrite here (slow path only) */
        u32 keep = st ? st->flags & (NV_CTF_SVC | NV_CTF_VIA_STACK) : 0;
        if (!st && !svc_rev && !svc_reply) svc_rev = nv_svc_reply(&fk, &rnat);
        if (nv_ct_admit(&fk, rev, reply, !st, svc_reply | (keep & NV_CTF_SVC),
                        (keep & NV_CTF_VIA_STACK) | nv_shaped_ct(src, dst_local ? dst : 0),
                        skb->ifindex, src_id, dst_local ? dst->ifindex : 0, dst_id,
                        dst_local ? dst : 0, dst_local ? src : 0) < 0)
            return nv_drop(&p, src_id, dst_id, NV_DROP_FLOW_TABLE_FULL, NV_HOOK_FROM_POD);
        ctflags = keep | (reply ? NV_CTF_REPLY : 0);
        if (!reply) {
            nv_flowstat(NV_FS_NEW_FLOWS);
            nv_traffic(NV_HOOK_FROM_POD, NV_TRAFFIC_NEW_FLOW, 0);
            nv_emit(&p, src_id, dst_id, NV_VERDICT_ALLOW, NV_DROP_NONE, NV_HOOK_FROM_POD);
        }
    } else {
        ctflags = st->flags;
    }
    /* Services: a reply of a translated flow gets its frontend address back (policy above saw it
     * as the backend sent it); a flow that crossed the stack (kube-proxy) stays on it. */
    if (ctflags & (NV_CTF_SVC | NV_CTF_VIA_STACK)) {
        if (ctflags & NV_CTF_VIA_STACK) {
            nv_traffic(NV_HOOK_FROM_POD, NV_TRAFFIC_FORWARDED, p.len);
            return nv_to_stack(src);
        }
        if (!svc_rev) svc_rev = nv_svc_reply(&fk, &rnat);
    }
    if (svc_rev) {
        if (nv_nat_apply(skb, &p, l4off, &rnat) < 0) return nv_drop(&p, src_id, dst_id, NV_DROP_MALFORMED, NV_HOOK_FROM_POD);
        if (rnat.flags & NV_NATF_OUT) {
            nv_traffic(NV_HOOK_FROM_POD, NV_TRAFFIC_FORWARDED, p.len);
            return nv_fib_out(skb, &p);
        }
        dk.ip = p.daddr;
        dst = endpoints.lookup(&dk);
    }
    /* host, world, other nodes' unknown addresses: the kernel routes; a flow with a shaped end, too */
    if (!dst || nv_shaped_ct(src, nv_is_local(dst) ? dst : 0)) {
        if (ctflags & NV_CTF_REPLY) skb->mark |= NV_REPLY_MARK;  /* not an outbound connection: no masquerade */
        nv_traffic(NV_HOOK_FROM_POD, NV_TRAFFIC_FORWARDED, p.len);
        return nv_to_stack(src);
    }

    if (nv_is_local(dst)) return nv_redirect_local(skb, &p, dst, src_id, dst_id, NV_HOOK_FROM_POD);
    /* remote endpoint: overlay -> the tunnel plugin (tunnel hook block); native -> the kernel routes.
     * Counted as forwarded before the tail call (a failed encap is counted again as its drop). */
    nv_traffic(NV_HOOK_FROM_POD, NV_TRAFFIC_FORWARDED, p.len);
    if (nv_cfg(NV_CFG_MODE) == 0) return nv_tunnel_encap(skb, &p, src_id, dst_id, dst->node_ip);
    return TC_ACT_OK;
}

int nv_to_pod(struct __sk_buff *skb) {
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end) return TC_ACT_OK;
    if (eth->h_proto == htons(NV_ETH_P_IPV6)) return nv_to_pod6(skb);
    if (eth->h_proto != htons(ETH_P_IP)) return TC_ACT_OK;
    struct iphdr *ip = (void *)(eth + 1);
    struct nv_pkt p = {};
    if ((void *)(ip + 1) > end) return TC_ACT_OK;
    if (nv_parse(ip, end, &p) < 0) return nv_drop(&p, 0, 0, NV_DROP_MALFORMED, NV_HOOK_TO_POD);
    int fast = nv_to_pod_fast(&p);
    if (fast != NV_FULL_PATH) return fast;

    struct nv_endpoint_key dk = { .ip = p.daddr };
    struct nv_endpoint *dst = endpoints.lookup(&dk);
    if (!dst) return TC_ACT_OK;
    u32 dst_id = dst->identity;
    struct nv_endpoint_key sk = { .ip = p.saddr };
    struct nv_endpoint *src = endpoints.lookup(&sk);
    u32 src_id;
    int from_host = 0;
    if (src) {
        src_id = src->identity;
    } else if (p.saddr == (u32)nv_cfg(NV_CFG_NODE_IP) || p.saddr == (u32)nv_cfg(NV_CFG_GATEWAY_IP)) {
        src_id = NV_ID_HOST;
        from_host = 1;
    } else {
        src_id = NV_ID_WORLD;
    }
    nv_tunnel_identity(skb, p.saddr, &src_id);  /* overlay: the identity the sender stamped */
    u32 rev = nv_cfg(NV_CFG_POLICY_REVISION);
    struct nv_flow_key fk;
    nv_flow_key(&fk, &p);
    struct nv_flow_state *st = nv_tcp_opens(&p) ? 0 : ct.lookup(&fk);  /* an opening SYN: as if none */
    if (st && st->policy_revision == rev) {
        nv_ct_touch(st);
        nv_traffic(NV_HOOK_TO_POD, NV_TRAFFIC_FORWARDED, p.len);
        return (st->flags & NV_CTF_SVC) ? nv_svc_to_pod(skb, &p, &fk) : TC_ACT_OK;
    }
    int reply = st && (st->flags & NV_CTF_REPLY);
    /* A local pod's packet reaches this hook only through the node's stack (redirect_peer skips
     * it), i.e. kube-proxy translated it: the whole flow stays on the stack, whose conntrack
     * must see the replies, and the source's egress is decided here on the translated packet. */
    u32 via_stack = (src && nv_is_local(src)) ? NV_CTF_VIA_STACK : 0;
    /* Overlay mode: a remote pod's packet without the tunnel mark came up this node's stack,
     * routed here plain by the client node's stack after its conntrack translated it (kube-proxy's
     * DNAT). Its replies must take the same way back through both stacks' conntrack: encapsulated
     * by the tunnel program they would reach the client untranslated, and a conntrack that saw
     * only one direction of a TCP flow calls the rest INVALID, which kube-proxy's rules drop. */
    u32 came_up_stack = (nv_cfg(NV_CFG_MODE) == 0 && src && !nv_is_local(src) && !(skb->mark & NV_TUNNEL_MARK))
                            ? NV_CTF_VIA_STACK : 0;
    u32 keep = st ? st->flags & (NV_CTF_SVC | NV_CTF_VIA_STACK) : 0;
    struct nv_verdict v = {};
    u32 reason;
    if (reply)  /* the original was this pod -> src: its egress, and src's ingress if src is ours */
        reason = nv_policy_decide(dst_id, src_id, p.daddr, p.saddr, p.proto, p.sport, 1, src && nv_is_local(src),
                                  0, &v);
    else  /* the source's egress was decided where it left its pod, unless the stack translated it */
        reason = nv_policy_decide(src_id, dst_id, p.saddr, p.daddr, p.proto, p.dport, via_stack != 0, 1, from_host,
                                  &v);
    if (reason) return nv_drop_policy(&p, src_id, dst_id, reason, NV_HOOK_TO_POD, &v);
    if (nv_ct_admit(&fk, rev, reply, !st, keep & NV_CTF_SVC,
                    (keep & NV_CTF_VIA_STACK) | via_stack | came_up_stack | nv_shaped_ct(dst, 0),
                    0, src_id, skb->ifindex, dst_id, 0, 0) < 0)  /* replies leave the pod here */
        return nv_drop(&p, src_id, dst_id, NV_DROP_FLOW_TABLE_FULL, NV_HOOK_TO_POD);
    if (!reply) {
        nv_flowstat(NV_FS_NEW_FLOWS);
        nv_traffic(NV_HOOK_TO_POD, NV_TRAFFIC_NEW_FLOW, 0);
        nv_emit(&p, src_id, dst_id, NV_VERDICT_ALLOW, NV_DROP_NONE, NV_HOOK_TO_POD);
    }
    nv_traffic(NV_HOOK_TO_POD, NV_TRAFFIC_FORWARDED, p.len);
    return (keep & NV_CTF_SVC) ? nv_svc_to_pod(skb, &p, &fk) : TC_ACT_OK;
}
