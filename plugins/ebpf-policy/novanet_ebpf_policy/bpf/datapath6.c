/* ------------------------------------------------------------------ IPv6
 * Inserted into bpf/datapath.c where NV_DATAPATH6 stands (after the Services section): what
 * nv_from_pod and nv_to_pod do with an IPv6 packet. The same model as IPv4 with the family's own
 * maps (endpoints_v6, ep_policy_v6, policy_cidrs_v6, ct6; layouts in the Python layouts): the
 * source must own its address (the veth it came in on), NetworkPolicy decides through the same
 * sets (identities are per pod: an identity rule admits both of a pod's addresses), flows are
 * admitted in both directions, a local destination gets the packet by redirect_peer, anything
 * else goes to the node's stack. The pod's neighbour solicitations are answered here with the
 * host veth's MAC, as its ARP requests are (no proxy NDP, no neighbour entries in the kernel).
 * In overlay mode a remote IPv6 pod's packet goes to the active tunnel plugin through the same
 * tail call as IPv4's (the tunnel hook block of bpf/datapath.c: the tunnels entry is the node's
 * IPv4 underlay address), and an unknown address of the cluster's IPv6 range is NO_ROUTE; what a
 * tunnel decapsulated reaches nv_to_pod6 with the identity its sender stamped.
 * Services per packet (ClusterIP from a pod whose socket the cgroup hooks did not see, the
 * reverse rewrite of replies) are bpf/services6.c, called from here. Not here (yet): the egress
 * map. Extension headers are not walked: a
 * packet whose next header is not TCP/UDP/SCTP/ICMPv6 is decided on that protocol number with no
 * ports. */

#define NV_ND_ROUTER_SOLICIT 133
#define NV_ND_NEIGHBOR_SOLICIT 135
#define NV_ND_NEIGHBOR_ADVERT 136
#define NV_ND_REDIRECT 137

struct nv_ip6 {
    u8 vtc_flow[4]; u16 payload_len; u8 nexthdr; u8 hop_limit; u8 saddr[16]; u8 daddr[16];
} __attribute__((packed));

/* Neighbour solicitation/advertisement with one link-layer address option (RFC 4861 4.3, 4.4). */
struct nv_nd {
    u8 type; u8 code; u16 csum; u32 flags; u8 target[16]; u8 opt_type; u8 opt_len; u8 opt_mac[6];
} __attribute__((packed));

struct nv_nd_reply {
    struct nv_ip6 ip; struct nv_nd nd;
} __attribute__((packed));

/* The ICMPv6 checksum's pseudo-header (RFC 8200 8.1). */
struct nv_ip6_pseudo {
    u8 saddr[16]; u8 daddr[16]; u32 len; u8 zero[3]; u8 nexthdr;
} __attribute__((packed));

static __always_inline int nv_ip6_eq(const u8 *a, const u8 *b) {
    u64 x[2], y[2];
    __builtin_memcpy(x, a, 16);
    __builtin_memcpy(y, b, 16);
    return x[0] == y[0] && x[1] == y[1];
}

/* Link-local (fe80::/10), multicast (ff00::/8) or unspecified (::): never routed off the link. */
static __always_inline int nv_ip6_link_scope(const u8 *a) {
    u64 x[2];
    __builtin_memcpy(x, a, 16);
    return a[0] == 0xff || (a[0] == 0xfe && (a[1] & 0xc0) == 0x80) || (x[0] == 0 && x[1] == 0);
}

/* CONFIG holds an IPv6 address in two slots: its bytes 0-7 and 8-15, each as a native u64. */
static __always_inline int nv_ip6_is_cfg(const u8 *a, u32 hi_key, u32 lo_key) {
    u64 hi = nv_cfg(hi_key), lo = nv_cfg(lo_key), x[2];
    __builtin_memcpy(x, a, 16);
    return (hi || lo) && x[0] == hi && x[1] == lo;
}

/* Neighbour discovery (router/neighbour solicitations and advertisements, redirects): link-level,
 * never forwarded (a receiver drops it unless its hop limit is still 255), so not policed. */
static __always_inline int nv_nd_type(struct nv_ip6 *ip, void *end) {
    u8 *icmp = (void *)(ip + 1);
    if (ip->nexthdr != NV_IPPROTO_ICMPV6 || (void *)(icmp + 1) > end) return 0;
    return icmp[0] >= NV_ND_ROUTER_SOLICIT && icmp[0] <= NV_ND_REDIRECT ? icmp[0] : 0;
}

static __always_inline int nv_ip6_is_host(const u8 *a) {
    return nv_ip6_is_cfg(a, NV_CFG_NODE_IP6_HI, NV_CFG_NODE_IP6_LO) ||
           nv_ip6_is_cfg(a, NV_CFG_GATEWAY_IP6_HI, NV_CFG_GATEWAY_IP6_LO);
}

/* In an IPv6 range kept in CONFIG as the network in the two-slot form above and its length? */
static __always_inline int nv_in_cfg6(const u8 *a, u32 hi_key, u32 lo_key, u32 len_key) {
    u32 len = nv_cfg(len_key);
    if (len == 0 || len > 128) return 0;
    u64 x[2];
    __builtin_memcpy(x, a, 16);
    u64 a0 = __builtin_bswap64(x[0]), a1 = __builtin_bswap64(x[1]);  /* numeric, so that masks are shifts */
    u64 n0 = __builtin_bswap64(nv_cfg(hi_key)), n1 = __builtin_bswap64(nv_cfg(lo_key));
    u64 m0 = len >= 64 ? ~0ULL : ~0ULL << (64 - len);
    u64 m1 = len <= 64 ? 0 : len == 128 ? ~0ULL : ~0ULL << (128 - len);
    return (a0 & m0) == (n0 & m0) && (a1 & m1) == (n1 & m1);
}

/* In the cluster's IPv6 range (CONFIG CLUSTER_CIDR6_*)? */
static __always_inline int nv_in_cluster6(const u8 *a) {
    return nv_in_cfg6(a, NV_CFG_CLUSTER_CIDR6_HI, NV_CFG_CLUSTER_CIDR6_LO, NV_CFG_CLUSTER_CIDR6_PREFIX_LEN);
}

/* kubeProxyReplacement: false, an IPv6 ClusterIP (CONFIG SERVICE_CIDR6_*): kube-proxy's DNAT
 * happens after nv_from_pod6, so the source's egress is decided where the translated packet
 * shows up (nv_to_pod6, same node), as nv_kp_frontend does for IPv4. */
static __always_inline int nv_kp_frontend6(const u8 *a) {
    return !nv_cfg(NV_CFG_L4LB_ENABLED) &&
           nv_in_cfg6(a, NV_CFG_SERVICE_CIDR6_HI, NV_CFG_SERVICE_CIDR6_LO, NV_CFG_SERVICE_CIDR6_PREFIX_LEN);
}

/* The tunnel contract's cb[2] word for an IPv6 inner source: its last 4 bytes, numeric. */
static __always_inline u32 nv_ip6_cb_word(const u8 *a) {
    return ((u32)a[12] << 24) | ((u32)a[13] << 16) | ((u32)a[14] << 8) | a[15];
}

static __always_inline struct nv_endpoint *nv_endpoint6(const u8 *a) {
    struct nv_endpoint6_key k = {};
    __builtin_memcpy(k.ip, a, 16);
    return endpoints_v6.lookup(&k);
}

static __always_inline struct nv_pcidr *nv_peer_cidr6(const u8 *peer_ip) {
    struct nv_pcidr6_key ck = {};
    ck.prefixlen = 128;
    __builtin_memcpy(ck.ip, peer_ip, 16);
    return policy_cidrs_v6.lookup(&ck);
}

static __always_inline u32 nv_side6(const u8 *ep_ip, int ingress, u32 peer_id, const u8 *peer_ip, u8 proto,
                                    u16 dport, struct nv_verdict *v) {
    struct nv_endpoint6_key k = {};
    __builtin_memcpy(k.ip, ep_ip, 16);
    return nv_side_ep(ep_policy_v6.lookup(&k), ingress, peer_id, 0, peer_ip, proto, dport, v);
}

/* nv_policy_decide for IPv6 addresses (the egress map is IPv4's: not consulted). */
static __always_inline u32 nv_policy_decide6(u32 osrc_id, u32 odst_id, const u8 *osaddr, const u8 *odaddr, u8 proto,
                                             u16 dport, int eg_local, int in_local, int from_host,
                                             struct nv_verdict *v) {
    v->dir = NV_PDIR_NONE;
    v->set = 0;
    int o = nv_policy_override(osrc_id, odst_id, proto, dport);
    if (o >= 0) return o;
    if (from_host) return 0;
    u32 r = 0;
    if (eg_local) r = nv_side6(osaddr, 0, odst_id, odaddr, proto, dport, v);
    if (!r && in_local) r = nv_side6(odaddr, 1, osrc_id, osaddr, proto, dport, v);
    return r;
}

static __always_inline int nv_parse6(struct nv_ip6 *ip, void *end, struct nv_pkt *p) {
    p->family = NV_AF_INET6;
    __builtin_memcpy(p->saddr6, ip->saddr, 16);
    __builtin_memcpy(p->daddr6, ip->daddr, 16);
    p->proto = ip->nexthdr;
    p->ttl = ip->hop_limit;
    p->len = ntohs(ip->payload_len) + sizeof(*ip);
    return nv_parse_l4((void *)(ip + 1), end, p);
}

static __always_inline void nv_flow6_key(struct nv_flow6_key *k, struct nv_pkt *p) {
    __builtin_memcpy(k->src_ip, p->saddr6, 16);
    __builtin_memcpy(k->dst_ip, p->daddr6, 16);
    k->src_port = p->sport; k->dst_port = p->dport;
    if (p->proto == NV_IPPROTO_ICMPV6) { k->src_port = p->icmp_id; k->dst_port = p->icmp_id; }
    k->protocol = p->proto; k->pad[0] = 0; k->pad[1] = 0; k->pad[2] = 0;
}

/* nv_ct_admit for ct6, with the same Services flags (reply_flags: SVC on the REPLY entry, SVC_FWD
 * on the other). Both directions or neither; k_dst / r_dst: a same-node destination of each
 * direction, copied into its entry (nv_ct_dst) so that the established flow is delivered from the
 * flow entry alone, as IPv4's. */
static __always_inline int nv_ct_admit6(struct nv_flow6_key *k, u32 rev, int k_is_reply, int fresh, u32 reply_flags,
                                        u32 both_flags, u32 k_ifindex, u32 k_identity, u32 r_ifindex, u32 r_identity,
                                        struct nv_endpoint *k_dst, struct nv_endpoint *r_dst) {
    struct nv_flow_state st = {};
    st.last_seen_ns = bpf_ktime_get_ns();
    st.policy_revision = rev;
    u32 fwd_flags = (reply_flags & NV_CTF_SVC) ? NV_CTF_SVC_FWD : 0;
    st.flags = (k_is_reply ? NV_CTF_REPLY | reply_flags : fwd_flags) | both_flags;
    st.ifindex = k_ifindex;
    st.identity = k_identity;
    nv_ct_dst(&st, k_dst);
    if (ct6.update(k, &st) < 0) return -1;
    struct nv_flow6_key r = {};
    __builtin_memcpy(r.src_ip, k->dst_ip, 16);
    __builtin_memcpy(r.dst_ip, k->src_ip, 16);
    r.src_port = k->dst_port; r.dst_port = k->src_port; r.protocol = k->protocol;
    st.flags = (k_is_reply ? fwd_flags : NV_CTF_REPLY | reply_flags) | both_flags;
    st.ifindex = r_ifindex;
    st.identity = r_identity;
    nv_ct_dst(&st, r_dst);
    if (ct6.update(&r, &st) < 0) {
        if (fresh) ct6.delete(k);
        return -1;
    }
    return 0;
}

/* Answer a pod's neighbour solicitation (for its gateway, or any other global address: the pod
 * routes everything through the gateway) with a solicited advertisement carrying the host veth
 * MAC, sent back into the pod. Duplicate address detection (source ::), link-local targets (the
 * host veth's own address: the kernel answers) and the pod's own address pass to the stack.
 * (nv_csum_fold: bpf/services.c, inserted before this file.) */
static __always_inline int nv_nd_reply(struct __sk_buff *skb) {
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    struct nv_ip6 *ip = (void *)(eth + 1);
    struct nv_nd *ns = (void *)(ip + 1);
    if ((void *)ns + 24 > end) return TC_ACT_OK;  /* through the target */
    if (ns->code != 0 || ip->hop_limit != 255) return TC_ACT_OK;  /* not a valid solicitation */
    if (nv_ip6_link_scope(ip->saddr) || nv_ip6_link_scope(ns->target) || nv_ip6_eq(ns->target, ip->saddr))
        return TC_ACT_OK;
    struct nv_endpoint *src = nv_endpoint6(ip->saddr);
    if (!src || !nv_src_owned(src, skb)) return TC_ACT_OK;
    struct nv_nd_reply r = {};
    r.ip.vtc_flow[0] = 0x60;
    r.ip.payload_len = htons(sizeof(struct nv_nd));
    r.ip.nexthdr = NV_IPPROTO_ICMPV6;
    r.ip.hop_limit = 255;
    __builtin_memcpy(r.ip.saddr, ns->target, 16);
    __builtin_memcpy(r.ip.daddr, ip->saddr, 16);
    r.nd.type = NV_ND_NEIGHBOR_ADVERT;
    r.nd.flags = htonl(0x60000000);  /* solicited, override */
    __builtin_memcpy(r.nd.target, ns->target, 16);
    r.nd.opt_type = 2;  /* target link-layer address */
    r.nd.opt_len = 1;
    __builtin_memcpy(r.nd.opt_mac, src->host_mac, 6);
    struct ethhdr e = {};
    __builtin_memcpy(e.h_dest, eth->h_source, 6);
    __builtin_memcpy(e.h_source, src->host_mac, 6);
    e.h_proto = htons(NV_ETH_P_IPV6);
    struct nv_ip6_pseudo ph = {};
    __builtin_memcpy(ph.saddr, r.ip.saddr, 16);
    __builtin_memcpy(ph.daddr, r.ip.daddr, 16);
    ph.len = htonl(sizeof(struct nv_nd));
    ph.nexthdr = NV_IPPROTO_ICMPV6;
    s64 sum = bpf_csum_diff(0, 0, (__be32 *)&ph, sizeof(ph), 0);
    if (sum < 0) return TC_ACT_SHOT;
    sum = bpf_csum_diff(0, 0, (__be32 *)&r.nd, sizeof(r.nd), (u32)sum);
    if (sum < 0) return TC_ACT_SHOT;
    r.nd.csum = nv_csum_fold(sum);
    u32 len = sizeof(e) + sizeof(r);
    if (skb->len != len && bpf_skb_change_tail(skb, len, 0)) return TC_ACT_SHOT;
    if (bpf_skb_store_bytes(skb, 0, &e, sizeof(e), 0) || bpf_skb_store_bytes(skb, sizeof(e), &r, sizeof(r), 0))
        return TC_ACT_SHOT;
    return bpf_redirect(skb->ifindex, 0);  /* back out of the host veth, into the pod */
}

/* Same-node delivery: L2 rewrite (mac: the destination pod's MAC, then the host veth's), hop limit
 * as a router does (IPv6 has no header checksum), into the pod netns. */
static __always_inline int nv_redirect_l2_6(struct __sk_buff *skb, u32 ifindex, u8 *mac) {
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    struct nv_ip6 *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end) return TC_ACT_SHOT;
    __builtin_memcpy(eth->h_dest, mac, 6);
    __builtin_memcpy(eth->h_source, mac + 6, 6);
    ip->hop_limit--;
    return bpf_redirect_peer(ifindex, 0);
}

static __always_inline int nv_redirect_local6(struct __sk_buff *skb, struct nv_pkt *p, struct nv_endpoint *dst,
                                              u32 src_id, u32 dst_id, u8 hook) {
    if (p->ttl <= 1) return nv_drop(p, src_id, dst_id, NV_DROP_TTL_EXCEEDED, hook);
    nv_traffic(hook, NV_TRAFFIC_FORWARDED, p->len);
    u8 mac[12];  /* off the map value before the packet is written */
    __builtin_memcpy(mac, dst->mac, 6);
    __builtin_memcpy(mac + 6, dst->host_mac, 6);
    return nv_redirect_l2_6(skb, dst->ifindex, mac);
}

/* bpf/services6.c (after this file) */
static __always_inline int nv_svc6_candidate(const u8 *daddr);
static __always_inline int nv_svc_from_pod6(struct __sk_buff *skb, struct nv_pkt *p, u32 src_id, struct nv_nat6 *rnat,
                                            int *verdict);
static __always_inline void nv_svc_forget6(struct nv_flow6_key *fk);
static __always_inline int nv_svc_reply6(struct nv_flow6_key *fk, struct nv_nat6 *rnat);
static __always_inline int nv_nat6_apply(struct __sk_buff *skb, struct nv_pkt *p, struct nv_nat6 *n);
static __always_inline int nv_fib_out6(struct __sk_buff *skb, struct nv_pkt *p);
static __always_inline int nv_svc_to_pod6(struct __sk_buff *skb, struct nv_pkt *p, struct nv_flow6_key *fk);

/* A pod's IPv6 packet is decided by a program of its own, nv_from_pod6_prog (bpf/services6.c),
 * which nv_from_pod tail-calls (ipv6_progs[0]): the verifier walks each program's paths
 * separately, and nv_from_pod with both families inlined was already at 762k of the 1M
 * instructions it explores before IPv6 had a per-packet Services path. */
static __always_inline int nv_from_pod6(struct __sk_buff *skb) {
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    struct nv_ip6 *ip = (void *)(eth + 1);
    struct nv_pkt p = {};
    if ((void *)(ip + 1) > end) {
        nv_count(NV_DROP_MALFORMED);
        nv_traffic(NV_HOOK_FROM_POD, NV_DROP_MALFORMED, 0);
        return TC_ACT_SHOT;
    }
    int nd = nv_nd_type(ip, end);
    if (nd == NV_ND_NEIGHBOR_SOLICIT) return nv_nd_reply(skb);
    /* other neighbour discovery, MLD reports, the node's link-local address: the link's, not routed */
    if (nd || nv_ip6_link_scope(ip->saddr) || nv_ip6_link_scope(ip->daddr)) return TC_ACT_OK;
    if (nv_parse6(ip, end, &p) < 0) return nv_drop(&p, 0, 0, NV_DROP_MALFORMED, NV_HOOK_FROM_POD);

    u32 rev = nv_cfg(NV_CFG_POLICY_REVISION);
    struct nv_flow6_key fk;
    nv_flow6_key(&fk, &p);
    struct nv_flow_state *st = nv_tcp_opens(&p) ? 0 : ct6.lookup(&fk);  /* an opening SYN: as if none */
    /* An established flow, from the veth its direction was admitted on (ownership of the source
     * address was checked then; the entry carries the source identity): no source lookup, no
     * policy (IPv4's fast path, nv_from_pod_fast). A same-node destination comes from the entry's
     * copy (the dataplane bumps the revision when that endpoint goes or changes), so the flow
     * table is the one lookup; a remote one's tunnel endpoint from endpoints_v6. */
    if (st && st->policy_revision == rev && st->ifindex == skb->ifindex &&
        !(st->flags & (NV_CTF_SVC | NV_CTF_SVC_FWD | NV_CTF_VIA_STACK | NV_CTF_SHAPED)) && p.ttl > 1) {
#ifndef NV_NO_DST_COPY  /* profiling aid: the endpoint lookup instead (bench/ipv6_datapath.py --dst-copy) */
        if (st->dst_ifindex) {
            nv_ct_touch(st);
            nv_traffic(NV_HOOK_FROM_POD, NV_TRAFFIC_FORWARDED, p.len);
            u32 ifindex = st->dst_ifindex;
            u8 mac[12];
            __builtin_memcpy(mac, st->dst_mac, 12);
            return nv_redirect_l2_6(skb, ifindex, mac);
        }
#endif
        struct nv_endpoint *fdst = nv_endpoint6(p.daddr6);
        if (fdst && nv_is_local(fdst)) {
            nv_ct_touch(st);
            return nv_redirect_local6(skb, &p, fdst, st->identity, fdst->identity, NV_HOOK_FROM_POD);
        }
        if (fdst && nv_cfg(NV_CFG_MODE) == 0) {  /* a remote pod, overlay: the tunnel plugin */
            nv_ct_touch(st);
            nv_traffic(NV_HOOK_FROM_POD, NV_TRAFFIC_FORWARDED, p.len);
            return nv_tunnel_encap(skb, &p, st->identity, fdst->identity, fdst->node_ip);
        }
    }

    struct nv_endpoint *src = nv_endpoint6(p.saddr6);
    if (!src || !nv_src_owned(src, skb))  /* spoofed (an unknown or another pod's address) or stale */
        return nv_drop(&p, 0, 0, NV_DROP_NO_IDENTITY, NV_HOOK_FROM_POD);
    u32 src_id = src->identity;
    struct nv_endpoint *dst = nv_endpoint6(p.daddr6);
    struct nv_nat6 rnat = {};
    int svc_rev = 0;      /* a reverse rewrite is due after policy (bpf/services6.c) */
    u32 svc_reply = 0;    /* NV_CTF_SVC for a flow translated here */
    int opens = nv_tcp_opens(&p);
    if (!dst && nv_svc6_candidate(p.daddr6)) {
        int verdict = TC_ACT_SHOT;
        int r = nv_svc_from_pod6(skb, &p, src_id, &rnat, &verdict);
        if (r == NV_SVC_ANSWERED) return verdict;
        if (r == NV_SVC_REVERSE) svc_rev = 1;
        if (r == NV_SVC_NEW) opens = 1;  /* a new translation's entries are its own */
        if (r == NV_SVC_FORWARD || r == NV_SVC_NEW) {
            svc_reply = NV_CTF_SVC;
            dst = nv_endpoint6(p.daddr6);
            nv_flow6_key(&fk, &p);
            st = opens ? 0 : ct6.lookup(&fk);
        }
    }
    if (st && (st->flags & NV_CTF_SVC_FWD) && !svc_reply) {
        /* a per-packet translation's tuple reached untranslated (a reused client port): a new
         * flow, whose replies must not get the frontend's address (as IPv4's nv_from_pod) */
        nv_svc_forget6(&fk);
        st = 0;
    }
    u32 dst_id = dst ? dst->identity : nv_ip6_is_host(p.daddr6) ? NV_ID_HOST : NV_ID_WORLD;
    int dst_local = dst && nv_is_local(dst);
    /* overlay: an address of the cluster's range that no endpoint holds is no pod anywhere */
    if (!dst && dst_id == NV_ID_WORLD && nv_cfg(NV_CFG_MODE) == 0 && nv_in_cluster6(p.daddr6))
        return nv_drop(&p, src_id, 0, NV_DROP_NO_ROUTE, NV_HOOK_FROM_POD);
    u32 ctflags;
    if (st && st->policy_revision == rev) {
        nv_ct_touch(st);
        ctflags = st->flags;
    } else {
        int reply = st && (st->flags & NV_CTF_REPLY);
        struct nv_verdict v = {};
        u32 reason;
        if (reply)  /* the original was dst -> this pod */
            reason = nv_policy_decide6(dst_id, src_id, p.daddr6, p.saddr6, p.proto, p.sport, dst_local, 1,
                                       dst_id == NV_ID_HOST, &v);
        else
            reason = nv_policy_decide6(src_id, dst_id, p.saddr6, p.daddr6, p.proto, p.dport, !nv_kp_frontend6(p.daddr6),
                                       dst_local, 0, &v);
        if (reason) return nv_drop_policy(&p, src_id, dst_id, reason, NV_HOOK_FROM_POD, &v);
        /* a re-decided flow keeps its Services flags; a reply whose entry was evicted finds its
         * reverse rewrite here */
        u32 keep = st ? st->flags & (NV_CTF_SVC | NV_CTF_VIA_STACK) : 0;
        if (!st && !svc_rev && !svc_reply) svc_rev = nv_svc_reply6(&fk, &rnat);
        if (nv_ct_admit6(&fk, rev, reply, !st, svc_reply | (keep & NV_CTF_SVC),
                         (keep & NV_CTF_VIA_STACK) | nv_shaped_ct(src, dst_local ? dst : 0), skb->ifindex, src_id,
                         dst_local ? dst->ifindex : 0, dst_id, dst_local ? dst : 0, dst_local ? src : 0) < 0)
            return nv_drop(&p, src_id, dst_id, NV_DROP_FLOW_TABLE_FULL, NV_HOOK_FROM_POD);
        ctflags = keep | (reply ? NV_CTF_REPLY : 0);
        if (!reply) {
            nv_flowstat(NV_FS_NEW_FLOWS);
            nv_traffic(NV_HOOK_FROM_POD, NV_TRAFFIC_NEW_FLOW, 0);
            nv_emit(&p, src_id, dst_id, NV_VERDICT_ALLOW, NV_DROP_NONE, NV_HOOK_FROM_POD);
        }
    }
    /* Services: a reply of a translated flow gets its frontend address back (policy above saw it
     * as the backend sent it); one whose client is outside the node leaves by a FIB lookup */
    if ((ctflags & NV_CTF_SVC) && !svc_rev) svc_rev = nv_svc_reply6(&fk, &rnat);
    if (svc_rev) {
        if (nv_nat6_apply(skb, &p, &rnat) < 0) return nv_drop(&p, src_id, dst_id, NV_DROP_MALFORMED, NV_HOOK_FROM_POD);
        if (rnat.flags & NV_NATF_OUT) {
            nv_traffic(NV_HOOK_FROM_POD, NV_TRAFFIC_FORWARDED, p.len);
            return nv_fib_out6(skb, &p);
        }
        dst = nv_endpoint6(p.daddr6);
        dst_local = dst && nv_is_local(dst);
        dst_id = dst ? dst->identity : dst_id;
    }
    /* another node's pod, overlay: the tunnel plugin (counted as forwarded before the tail call, a
     * failed encap again as its drop), unless the flow crossed the stack or its source is shaped */
    if (dst && !dst_local && nv_cfg(NV_CFG_MODE) == 0 && !(ctflags & NV_CTF_VIA_STACK) && !nv_shaped_ct(src, 0)) {
        nv_traffic(NV_HOOK_FROM_POD, NV_TRAFFIC_FORWARDED, p.len);
        return nv_tunnel_encap(skb, &p, src_id, dst_id, dst->node_ip);
    }
    /* host, world, other nodes' pods (native): the kernel routes; a flow that crossed the stack or
     * has a shaped end stays on it */
    if (!dst_local || (ctflags & NV_CTF_VIA_STACK) || nv_shaped_ct(src, dst)) {
        if (ctflags & NV_CTF_REPLY) skb->mark |= NV_REPLY_MARK;  /* not an outbound connection: no masquerade */
        nv_traffic(NV_HOOK_FROM_POD, NV_TRAFFIC_FORWARDED, p.len);
        return nv_to_stack(src);
    }
    return nv_redirect_local6(skb, &p, dst, src_id, dst_id, NV_HOOK_FROM_POD);
}

/* What reaches a local IPv6 pod from the node's stack (the node itself, other nodes' pods routed
 * by the kernel, a shaped pod's traffic) or from a tunnel plugin's decapsulation (redirected to
 * the host veth's egress, skb->cb per the tunnel contract): the destination's ingress, and the source's egress where
 * the source is a local pod whose packet crossed the stack. */
static __always_inline int nv_to_pod6(struct __sk_buff *skb) {
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    struct nv_ip6 *ip = (void *)(eth + 1);
    struct nv_pkt p = {};
    if ((void *)(ip + 1) > end) return TC_ACT_OK;
    /* neighbour discovery (our own advertisements included), MLD: the link's */
    if (nv_nd_type(ip, end) || nv_ip6_link_scope(ip->saddr) || nv_ip6_link_scope(ip->daddr)) return TC_ACT_OK;
    if (nv_parse6(ip, end, &p) < 0) return nv_drop(&p, 0, 0, NV_DROP_MALFORMED, NV_HOOK_TO_POD);
    struct nv_endpoint *dst = nv_endpoint6(p.daddr6);
    if (!dst) return TC_ACT_OK;
    u32 dst_id = dst->identity;
    struct nv_endpoint *src = nv_endpoint6(p.saddr6);
    int from_host = !src && nv_ip6_is_host(p.saddr6);
    u32 src_id = src ? src->identity : from_host ? NV_ID_HOST : NV_ID_WORLD;
    int src_local = src && nv_is_local(src);
    nv_tunnel_identity(skb, nv_ip6_cb_word(p.saddr6), &src_id);  /* overlay: the identity the sender stamped */
    u32 rev = nv_cfg(NV_CFG_POLICY_REVISION);
    struct nv_flow6_key fk;
    nv_flow6_key(&fk, &p);
    struct nv_flow_state *st = nv_tcp_opens(&p) ? 0 : ct6.lookup(&fk);
    if (st && st->policy_revision == rev) {
        nv_ct_touch(st);
        nv_traffic(NV_HOOK_TO_POD, NV_TRAFFIC_FORWARDED, p.len);
        return (st->flags & NV_CTF_SVC) ? nv_svc_to_pod6(skb, &p, &fk) : TC_ACT_OK;
    }
    int reply = st && (st->flags & NV_CTF_REPLY);
    u32 via_stack = src_local ? NV_CTF_VIA_STACK : 0;
    /* Overlay mode: a remote pod's packet without the tunnel mark came up this node's stack after
     * the client node's kube-proxy translated it; its replies take the same way back (IPv4's
     * came_up_stack in nv_to_pod). */
    u32 came_up_stack = (nv_cfg(NV_CFG_MODE) == 0 && src && !src_local && !(skb->mark & NV_TUNNEL_MARK))
                            ? NV_CTF_VIA_STACK : 0;
    struct nv_verdict v = {};
    u32 reason;
    if (reply)  /* the original was this pod -> src */
        reason = nv_policy_decide6(dst_id, src_id, p.daddr6, p.saddr6, p.proto, p.sport, 1, src_local, 0, &v);
    else
        reason = nv_policy_decide6(src_id, dst_id, p.saddr6, p.daddr6, p.proto, p.dport, src_local, 1, from_host,
                                   &v);
    if (reason) return nv_drop_policy(&p, src_id, dst_id, reason, NV_HOOK_TO_POD, &v);
    u32 keep = st ? st->flags & (NV_CTF_SVC | NV_CTF_VIA_STACK) : 0;
    if (nv_ct_admit6(&fk, rev, reply, !st, keep & NV_CTF_SVC,
                     (keep & NV_CTF_VIA_STACK) | via_stack | came_up_stack | nv_shaped_ct(dst, 0), 0, src_id,
                     skb->ifindex, dst_id, 0, 0) < 0)  /* replies leave the pod here */
        return nv_drop(&p, src_id, dst_id, NV_DROP_FLOW_TABLE_FULL, NV_HOOK_TO_POD);
    if (!reply) {
        nv_flowstat(NV_FS_NEW_FLOWS);
        nv_traffic(NV_HOOK_TO_POD, NV_TRAFFIC_NEW_FLOW, 0);
        nv_emit(&p, src_id, dst_id, NV_VERDICT_ALLOW, NV_DROP_NONE, NV_HOOK_TO_POD);
    }
    nv_traffic(NV_HOOK_TO_POD, NV_TRAFFIC_FORWARDED, p.len);
    return (keep & NV_CTF_SVC) ? nv_svc_to_pod6(skb, &p, &fk) : TC_ACT_OK;
}
/* ------------------------------------------------------------------ end IPv6 */
