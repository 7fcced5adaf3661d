/* ------------------------------------------------------------------ Services per packet, IPv6
 * Inserted into datapath.c at NV_SERVICES6 (after bpf/datapath6.c, whose parsing, flow table and
 * policy it uses). The model of bpf/services.c's per-packet paths with the IPv6 maps: frontends
 * in services6 (backends6, lb_members6, affinity6), translations in revnat6 (keyed by ct6's key
 * as the packet arrives: FORWARD entries turn a client's packet into the backend's tuple, REVERSE
 * ones a backend's reply back), the flow table (ct6) keyed by the backend's side with SVC on the
 * reply entry. Two translation points:
 *   - nv_from_pod6: a pod's packet to an IPv6 ClusterIP (or this node's IPv6 address on a
 *     nodePort) that the socket hooks did not translate (a raw socket, SCTP, a process outside
 *     the node's cgroup); replies are restored in nv_from_pod6 (backend on this node) or
 *     nv_to_pod6 (backend elsewhere);
 *   - nv_from_underlay6: NodePort from outside the node to its IPv6 address, SNAT to that address
 *     for externalTrafficPolicy: Cluster, the client's address kept for Local.
 * IPv6 has no header checksum: a rewrite updates the L4 checksum's pseudo-header part by the
 * difference of the 16-byte addresses (SCTP's CRC covers no addresses, only its ports). The
 * fixed header is all that is parsed: the L4 header is at NV_IP6_L4 (no extension headers). */

#define NV_IP6_L4 (NV_IP_OFF + 40)

struct nv_nat6_key_words { u32 w[4]; };

/* The IPv4 helpers of bpf/services.c are kept as they are (their shape is what nv_from_pod's
 * verification budget was measured with); the IPv6 ones below are their own. */
struct nv_tcp_rst { u16 sport; u16 dport; u32 seq; u32 ack; u8 doff; u8 flags; u16 window; u16 check; u16 urg; };

struct nv_rst6 {
    struct nv_ip6 ip;
    struct nv_tcp_rst t;
} __attribute__((packed));

struct nv_unreach6 {
    struct nv_ip6 ip;
    u8 type; u8 code; u16 check; u32 unused;
    u8 orig[48];  /* the offending IPv6 header and its first 8 payload bytes */
} __attribute__((packed));

/* What a new translation and a refusal build, in this CPU's `svc6_scratch` entry rather than on
 * the stack: nv_from_pod inlines the IPv4 and the IPv6 paths into one frame, which these buffers
 * would push past BPF's 512 bytes (BCC cannot link BPF-to-BPF calls, so they cannot be a function
 * of their own). One program run uses it at a time (no preemption within a tc program). */
struct nv_svc6_work {
    struct nv_nat6 rv, fv;
    struct nv_flow6_key rk, fk;
    struct nv_lb_backend6 be;
    struct nv_ip6_pseudo ph;
    union { struct nv_rst6 rst; struct nv_unreach6 unreach; } ans;
};
_Static_assert(sizeof(struct nv_svc6_work) <= sizeof(struct nv_svc6_scratch), "svc6_scratch too small");

static __always_inline struct nv_svc6_work *nv_svc6_work(void) {
    u32 zero = 0;
    return (void *)svc6_scratch.lookup(&zero);
}

static __always_inline void nv_node_ip6(u8 *out) {
    u64 x[2];
    x[0] = nv_cfg(NV_CFG_NODE_IP6_HI);
    x[1] = nv_cfg(NV_CFG_NODE_IP6_LO);
    __builtin_memcpy(out, x, 16);
}

/* A 64-bit fold of an IPv6 client address for the affinity key (bit 63 is the socket path's). */
static __always_inline u64 nv_client6(const u8 *a) {
    u64 x[2];
    __builtin_memcpy(x, a, 16);
    return (x[0] ^ x[1]) & ~(1ULL << 63);
}

/* Can a pod's packet to daddr (no pod) be for an IPv6 frontend, or a reply to restore? An address
 * of the IPv6 serviceCIDR or this node's IPv6 address; without an IPv6 serviceCIDR, anything. */
static __always_inline int nv_svc6_candidate(const u8 *daddr) {
    if (!nv_cfg(NV_CFG_L4LB_ENABLED)) return 0;
    if (nv_ip6_is_cfg(daddr, NV_CFG_NODE_IP6_HI, NV_CFG_NODE_IP6_LO)) return 1;
    if (!nv_cfg(NV_CFG_SERVICE_CIDR6_PREFIX_LEN)) return 1;
    return nv_in_cfg6(daddr, NV_CFG_SERVICE_CIDR6_HI, NV_CFG_SERVICE_CIDR6_LO, NV_CFG_SERVICE_CIDR6_PREFIX_LEN);
}

static __always_inline struct nv_svc *nv_svc6_find(const u8 *ip, u16 port, u8 proto) {
    struct nv_svc6_key k = {};
    __builtin_memcpy(k.ip, ip, 16);
    k.port = port;
    k.protocol = proto;
    return services6.lookup(&k);
}

/* ------------------------------------------------------------------ rewriting */

/* SCTP after its ports changed (its CRC covers no addresses): as in nv_nat_apply. */
static __always_inline int nv_sctp_ports6(struct __sk_buff *skb, u32 sctp_len, u16 osport, u16 odport, u16 nsport,
                                          u16 ndport) {
    if (osport == nsport && odport == ndport) return 0;
    u32 ports_old = ((u32)htons(odport) << 16) | htons(osport);  /* bytes 0..3 as a little-endian load */
    u32 ports_new = ((u32)htons(ndport) << 16) | htons(nsport);
    if (sctp_len < 12 || sctp_len > 0xFFFF) return -1;
    u32 n = sctp_len - 4;
    u32 *xpow = sctp_crc.lookup(&n);
    u32 crc = 0;
    if (!xpow || bpf_skb_load_bytes(skb, NV_IP6_L4 + 8, &crc, 4) < 0) return -1;
    crc ^= nv_crc_mulmod(*xpow, ports_old ^ ports_new);
    return bpf_skb_store_bytes(skb, NV_IP6_L4 + 8, &crc, 4, 0) < 0 ? -1 : 0;
}

/* One side of the packet: the 16-byte address (and the L4 checksum's pseudo-header by the
 * difference), then the port. */
static __always_inline int nv_rewrite_side6(struct __sk_buff *skb, u8 proto, int src, const u8 *old_ip,
                                            const u8 *new_ip, u16 old_port, u16 new_port) {
    int csum = proto == IPPROTO_TCP ? 16 : proto == IPPROTO_UDP ? 6 : -1;
    u64 mangled = proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
    if (!nv_ip6_eq(old_ip, new_ip)) {
        struct nv_nat6_key_words o, n;  /* on the stack: bpf_csum_diff reads 4-byte words */
        __builtin_memcpy(&o, old_ip, 16);
        __builtin_memcpy(&n, new_ip, 16);
        if (csum >= 0) {
            s64 diff = bpf_csum_diff(o.w, 16, n.w, 16, 0);
            if (diff < 0) return -1;
            if (bpf_l4_csum_replace(skb, NV_IP6_L4 + csum, 0, (u32)diff, BPF_F_PSEUDO_HDR | mangled) < 0) return -1;
        }
        if (bpf_skb_store_bytes(skb, NV_IP_OFF + (src ? 8 : 24), n.w, 16, 0) < 0) return -1;
    }
    if (old_port == new_port) return 0;
    u16 op = htons(old_port), np = htons(new_port);
    if (csum >= 0 && bpf_l4_csum_replace(skb, NV_IP6_L4 + csum, op, np, mangled | 2) < 0) return -1;
    return bpf_skb_store_bytes(skb, NV_IP6_L4 + (src ? 0 : 2), &np, 2, 0) < 0 ? -1 : 0;
}

static __always_inline int nv_nat6_apply(struct __sk_buff *skb, struct nv_pkt *p, struct nv_nat6 *n) {
    u16 osport = p->sport, odport = p->dport;
    if (nv_rewrite_side6(skb, p->proto, 1, p->saddr6, n->saddr, p->sport, n->sport) < 0) return -1;
    if (nv_rewrite_side6(skb, p->proto, 0, p->daddr6, n->daddr, p->dport, n->dport) < 0) return -1;
    if (p->proto == NV_IPPROTO_SCTP &&
        nv_sctp_ports6(skb, p->len - 40, osport, odport, n->sport, n->dport) < 0)
        return -1;
    __builtin_memcpy(p->saddr6, n->saddr, 16);
    __builtin_memcpy(p->daddr6, n->daddr, 16);
    p->sport = n->sport;
    p->dport = n->dport;
    return 0;
}

/* nv_fib_out for IPv6: a reply whose source is now this node's address leaves by a FIB lookup
 * (the device it came in on must forward IPv6, as a Kubernetes node's do). */
static __always_inline int nv_fib_out6(struct __sk_buff *skb, struct nv_pkt *p) {
    struct bpf_fib_lookup f = {};
    f.family = NV_AF_INET6;
    f.l4_protocol = p->proto;
    f.sport = htons(p->sport);
    f.dport = htons(p->dport);
    f.tot_len = skb->gso_size ? 0 : p->len;
    __builtin_memcpy(f.ipv6_src, p->saddr6, 16);
    __builtin_memcpy(f.ipv6_dst, p->daddr6, 16);
    f.ifindex = skb->ifindex;
    int rc = bpf_fib_lookup(skb, &f, sizeof(f), 0);
    if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
        void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
        struct ethhdr *eth = data;
        if ((void *)(eth + 1) > end) return TC_ACT_SHOT;
        __builtin_memcpy(eth->h_dest, f.dmac, 6);
        __builtin_memcpy(eth->h_source, f.smac, 6);
        return bpf_redirect(f.ifindex, 0);
    }
    if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) return nv_redirect_neigh(f.ifindex, 0, 0, 0);
    nv_count(NV_DROP_NO_ROUTE);
    return TC_ACT_SHOT;
}

/* ------------------------------------------------------------------ no backend */

static __always_inline void nv_ip6_hdr(struct nv_ip6 *h, const u8 *saddr, const u8 *daddr, u8 nexthdr, u16 plen) {
    h->vtc_flow[0] = 0x60;
    h->payload_len = htons(plen);
    h->nexthdr = nexthdr;
    h->hop_limit = 64;
    __builtin_memcpy(h->saddr, saddr, 16);
    __builtin_memcpy(h->daddr, daddr, 16);
}

/* The L4 checksum of len bytes at l4 under h's pseudo-header (RFC 8200 8.1), built in *ph. */
static __always_inline u16 nv_csum6(struct nv_ip6_pseudo *ph, struct nv_ip6 *h, void *l4, u32 len) {
    __builtin_memset(ph, 0, sizeof(*ph));
    __builtin_memcpy(ph->saddr, h->saddr, 16);
    __builtin_memcpy(ph->daddr, h->daddr, 16);
    ph->len = htonl(len);
    ph->nexthdr = h->nexthdr;
    s64 sum = bpf_csum_diff(0, 0, (__be32 *)ph, sizeof(*ph), 0);
    sum = bpf_csum_diff(0, 0, l4, len, (u32)sum);
    return nv_csum_fold(sum);
}

/* The RST a REJECT gives the TCP segment *p: RST with seq = their ack to a segment with ACK, else
 * RST|ACK acknowledging it (RFC 9293 3.10.7.1). Checksum left 0. -1 = never answer (a RST). */
static __always_inline int nv_rst6_build(struct __sk_buff *skb, struct nv_pkt *p, struct nv_tcp_rst *r) {
    if (p->tcp_flags & 0x04) return -1;
    void *end = (void *)(long)skb->data_end;
    u8 *t = (void *)(long)skb->data + NV_IP6_L4;
    if ((void *)(t + 20) > end) return -1;
    u32 seq, ack;
    __builtin_memcpy(&seq, t + 4, 4);
    __builtin_memcpy(&ack, t + 8, 4);
    u32 hlen = 40 + ((t[12] >> 4) * 4);
    u32 seglen = p->len > hlen ? p->len - hlen : 0;
    if (p->tcp_flags & 0x02) seglen += 1;  /* SYN */
    if (p->tcp_flags & 0x01) seglen += 1;  /* FIN */
    r->sport = htons(p->dport);
    r->dport = htons(p->sport);
    r->doff = 5 << 4;
    if (p->tcp_flags & 0x10) {
        r->seq = ack;
        r->flags = 0x04;
    } else {
        r->ack = htonl(ntohl(seq) + seglen);
        r->flags = 0x14;
    }
    return 0;
}

/* Replace the packet after its Ethernet header with the len bytes at hdr, swap its Ethernet
 * addresses and send it back the way it came: into the pod (from_pod) or out of the device. */
static __always_inline int nv_answer6_send(struct __sk_buff *skb, void *hdr, u32 len, int from_pod) {
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end) return TC_ACT_SHOT;
    u8 mac[12];
    __builtin_memcpy(mac, eth->h_source, 6);
    __builtin_memcpy(mac + 6, eth->h_dest, 6);
    if (bpf_skb_change_tail(skb, NV_IP_OFF + len, 0) < 0) return TC_ACT_SHOT;
    if (bpf_skb_store_bytes(skb, NV_IP_OFF, hdr, len, 0) < 0) return TC_ACT_SHOT;
    if (bpf_skb_store_bytes(skb, 0, mac, 12, 0) < 0) return TC_ACT_SHOT;
    if (from_pod) return bpf_redirect_peer(skb->ifindex, 0);
    return bpf_redirect(skb->ifindex, 0);
}

/* nv_svc_answer for IPv6: a TCP RST, else ICMPv6 port unreachable (type 1, code 4), back the way
 * the packet came. */
static __always_inline int nv_svc_answer6(struct __sk_buff *skb, struct nv_pkt *p, int from_pod) {
    struct nv_svc6_work *w = nv_svc6_work();
    if (!w) return TC_ACT_SHOT;
    if (p->proto == IPPROTO_TCP) {
        struct nv_rst6 *r = &w->ans.rst;
        __builtin_memset(r, 0, sizeof(*r));
        if (nv_rst6_build(skb, p, &r->t) < 0) return TC_ACT_SHOT;
        nv_ip6_hdr(&r->ip, p->daddr6, p->saddr6, IPPROTO_TCP, sizeof(r->t));
        r->t.check = nv_csum6(&w->ph, &r->ip, &r->t, sizeof(r->t));
        return nv_answer6_send(skb, r, sizeof(*r), from_pod);
    }
    struct nv_unreach6 *u = &w->ans.unreach;
    __builtin_memset(u, 0, sizeof(*u));
    if (bpf_skb_load_bytes(skb, NV_IP_OFF, u->orig, sizeof(u->orig)) < 0) return TC_ACT_SHOT;
    u->type = 1;  /* destination unreachable */
    u->code = 4;  /* port unreachable */
    nv_ip6_hdr(&u->ip, p->daddr6, p->saddr6, NV_IPPROTO_ICMPV6, sizeof(*u) - sizeof(u->ip));
    u->check = nv_csum6(&w->ph, &u->ip, &u->type, sizeof(*u) - sizeof(u->ip));
    return nv_answer6_send(skb, u, sizeof(*u), from_pod);
}

/* ------------------------------------------------------------------ new flows */

static __always_inline void nv_flow6_reverse(struct nv_flow6_key *r, const u8 *src, const u8 *dst, u16 sport,
                                             u16 dport, u8 proto) {
    __builtin_memcpy(r->src_ip, src, 16);
    __builtin_memcpy(r->dst_ip, dst, 16);
    r->src_port = sport;
    r->dst_port = dport;
    r->protocol = proto;
    r->pad[0] = 0; r->pad[1] = 0; r->pad[2] = 0;
}

/* nv_svc_new_flow for IPv6. flags: NV_NATF_SNAT to replace the client's address by this node's
 * (NodePort Cluster), NV_NATF_OUT for replies that leave by a FIB lookup. 0 = translated; -1 = no
 * backend; -2 = no free SNAT port / rewrite failed. */
static __always_inline int nv_svc_new_flow6(struct __sk_buff *skb, struct nv_pkt *p, struct nv_svc *s, u64 client,
                                            u32 flags) {
    struct nv_svc6_work *w = nv_svc6_work();
    if (!w) return -2;
    struct nv_lb_backend6 *be = &w->be;
    if (nv_svc_pick6(s, client, be) < 0) return -1;
    int snat = (flags & NV_NATF_SNAT) != 0;
    u16 fl = 0;
    struct nv_nat6 *fv = &w->fv, *rv = &w->rv;
    __builtin_memset(fv, 0, sizeof(*fv));
    __builtin_memset(rv, 0, sizeof(*rv));
    __builtin_memcpy(fv->saddr, p->saddr6, 16);  /* the client's side as the backend sees it */
    fv->sport = p->sport;
    int hairpin = nv_ip6_eq(be->ip, p->saddr6);
    if (hairpin) {  /* the client is the backend; it must not see its own address */
        __builtin_memcpy(fv->saddr, p->daddr6, 16);
        fl = NV_NATF_SNAT;
    } else if (snat) {
        nv_node_ip6(fv->saddr);
        fl = NV_NATF_SNAT;
    }
    struct nv_flow6_key *rk = &w->rk;
    nv_flow6_reverse(rk, be->ip, fv->saddr, be->port, p->sport, p->proto);
    if (snat && !hairpin) {
        /* the backend sees the node's address: a port no other translated flow to this backend
         * uses (this very client's entry is ours to replace) */
        u32 a[4];
        __builtin_memcpy(a, p->saddr6, 16);
        u32 h = (a[0] ^ a[1] ^ a[2] ^ a[3] ^ (p->sport << 16) ^ p->sport) * 2654435761u;
        int found = 0;
#pragma clang loop unroll(disable)
        for (int i = 0; i < 8; i++) {
            rk->dst_port = NV_SNAT_PORT_MIN + (h + i * 7919) % NV_SNAT_PORT_SPAN;
            struct nv_nat6 *o = revnat6.lookup(rk);
            if (!o || (nv_ip6_eq(o->daddr, p->saddr6) && o->dport == p->sport)) { found = 1; break; }
        }
        if (!found) return -2;
        fv->sport = rk->dst_port;
    }
    u64 now = bpf_ktime_get_ns();
    __builtin_memcpy(rv->saddr, p->daddr6, 16);
    __builtin_memcpy(rv->daddr, p->saddr6, 16);
    rv->sport = p->dport;
    rv->dport = p->sport;
    rv->flags = NV_NATF_REVERSE | fl | (flags & NV_NATF_OUT);
    rv->svc_id = s->id;
    rv->last_ns = now;
    __builtin_memcpy(fv->daddr, be->ip, 16);
    fv->dport = be->port;
    fv->flags = NV_NATF_FORWARD | fl;
    fv->svc_id = s->id;
    fv->last_ns = now;
    nv_flow6_key(&w->fk, p);
    revnat6.update(rk, rv);  /* reverse first: a reply can never find a forward-only flow */
    revnat6.update(&w->fk, fv);
    if (nv_nat6_apply(skb, p, fv) < 0) return -2;
    return 0;
}

/* nv_nat_reusable for a revnat6 entry */
static __always_inline int nv_nat6_reusable(struct nv_nat6 *n, struct nv_pkt *p) {
    if (p->proto == IPPROTO_TCP) return (p->tcp_flags & 0x12) != 0x02;
    u64 now = bpf_ktime_get_ns();
    if (now - n->last_ns > NV_NAT_IDLE_NS) return 0;
    if (now - n->last_ns > NV_NS_PER_S) n->last_ns = now;
    return 1;
}

/* From a pod, destination not a pod: an established translation, a reply to restore (hairpin,
 * NodePort Cluster through this node's address), or a new flow to a frontend. */
static __always_inline int nv_svc_from_pod6(struct __sk_buff *skb, struct nv_pkt *p, u32 src_id, struct nv_nat6 *rnat,
                                            int *verdict) {
    if (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP && p->proto != NV_IPPROTO_SCTP) return NV_SVC_PASS;
    struct nv_flow6_key fk;
    nv_flow6_key(&fk, p);
    struct nv_nat6 *n = revnat6.lookup(&fk);
    if (n) {
        if (n->flags & NV_NATF_REVERSE) {
            __builtin_memcpy(rnat, n, sizeof(*rnat));
            return NV_SVC_REVERSE;
        }
        if (nv_nat6_reusable(n, p)) {
            if (nv_nat6_apply(skb, p, n) < 0) {
                *verdict = TC_ACT_SHOT;
                return NV_SVC_ANSWERED;
            }
            return NV_SVC_FORWARD;
        }
    }
    struct nv_svc *s = nv_svc6_find(p->daddr6, p->dport, p->proto);
    if (!s) return NV_SVC_PASS;  /* no IPv6 serviceCIDR accounting: a frontend without an entry is not refused */
    int r = nv_svc_new_flow6(skb, p, s, nv_client6(p->saddr6), 0);
    if (r == 0) {
        nv_svcstat(NV_SVCSTAT_PACKET6);
        return NV_SVC_NEW;
    }
    u32 why = nv_svc_refusal(s);
    nv_count(why);
    nv_traffic(NV_HOOK_FROM_POD, why, p->len);
    nv_emit(p, src_id, 0, NV_VERDICT_DENY, why, NV_HOOK_FROM_POD);
    *verdict = r == -1 ? nv_svc_answer6(skb, p, 1) : TC_ACT_SHOT;
    return NV_SVC_ANSWERED;
}

/* nv_svc_forget for ct6/revnat6: *fk (client -> backend, untranslated) reuses a per-packet
 * translation's tuple; remove its reverse and forward entries. */
static __always_inline void nv_svc_forget6(struct nv_flow6_key *fk) {
    struct nv_flow6_key rk = {};
    nv_flow6_reverse(&rk, fk->dst_ip, fk->src_ip, fk->dst_port, fk->src_port, fk->protocol);
    struct nv_nat6 *r = revnat6.lookup(&rk);
    if (!r || !(r->flags & NV_NATF_REVERSE)) return;
    struct nv_flow6_key ok = {};
    nv_flow6_reverse(&ok, r->daddr, r->saddr, r->dport, r->sport, fk->protocol);
    struct nv_nat6 *f = revnat6.lookup(&ok);
    if (f && (f->flags & NV_NATF_FORWARD) && nv_ip6_eq(f->daddr, fk->dst_ip) && f->dport == fk->dst_port)
        revnat6.delete(&ok);
    revnat6.delete(&rk);
}

/* The flow-table reply entry of a translated flow says a reverse rewrite is due. */
static __always_inline int nv_svc_reply6(struct nv_flow6_key *fk, struct nv_nat6 *rnat) {
    struct nv_nat6 *n = revnat6.lookup(fk);
    if (!n || !(n->flags & NV_NATF_REVERSE)) return 0;
    __builtin_memcpy(rnat, n, sizeof(*rnat));
    return 1;
}

/* to-pod: the reply of a flow translated on this node, from a backend on another node. */
static __always_inline int nv_svc_to_pod6(struct __sk_buff *skb, struct nv_pkt *p, struct nv_flow6_key *fk) {
    struct nv_nat6 rnat;
    if (!nv_svc_reply6(fk, &rnat)) return TC_ACT_OK;
    if (nv_nat6_apply(skb, p, &rnat) < 0) return TC_ACT_SHOT;
    return TC_ACT_OK;
}

/* ------------------------------------------------------------------ NodePort from outside */

/* nv_underlay_deliver for IPv6: a local backend (its ingress decided here with the real client's
 * address, even when SNATed), or one on another node through the tunnel / routing. */
static __always_inline int nv_underlay_deliver6(struct __sk_buff *skb, struct nv_pkt *p, const u8 *client) {
    struct nv_endpoint *dst = nv_endpoint6(p->daddr6);
    if (!dst) return nv_drop(p, NV_ID_WORLD, 0, NV_DROP_NO_ROUTE, NV_HOOK_FROM_NETWORK);
    u32 dst_id = dst->identity;
    if (!nv_is_local(dst)) {
        if (nv_cfg(NV_CFG_MODE) == 0) return nv_tunnel_encap(skb, p, NV_ID_WORLD, dst_id, dst->node_ip);
        return nv_fib_out6(skb, p);
    }
    u32 rev = nv_cfg(NV_CFG_POLICY_REVISION);
    struct nv_flow6_key fk;
    nv_flow6_key(&fk, p);
    struct nv_flow_state *st = nv_tcp_opens(p) ? 0 : ct6.lookup(&fk);
    if (st && st->policy_revision == rev) nv_ct_touch(st);
    if (!st || st->policy_revision != rev) {
        struct nv_verdict v = {};
        u32 reason = nv_policy_decide6(NV_ID_WORLD, dst_id, client, p->daddr6, p->proto, p->dport, 0, 1, 0, &v);
        if (reason) return nv_drop_policy(p, NV_ID_WORLD, dst_id, reason, NV_HOOK_FROM_NETWORK, &v);
        if (nv_ct_admit6(&fk, rev, 0, !st, NV_CTF_SVC, 0, 0, NV_ID_WORLD, dst->ifindex, dst_id, 0, 0) < 0)
            return nv_drop(p, NV_ID_WORLD, dst_id, NV_DROP_FLOW_TABLE_FULL, NV_HOOK_FROM_NETWORK);
        if (!st) {
            nv_flowstat(NV_FS_NEW_FLOWS);
            nv_emit(p, NV_ID_WORLD, dst_id, NV_VERDICT_ALLOW, NV_DROP_NONE, NV_HOOK_FROM_NETWORK);
        }
    }
    return nv_redirect_local6(skb, p, dst, NV_ID_WORLD, dst_id, NV_HOOK_FROM_NETWORK);
}

/* nv_from_underlay's IPv6 half: packets to this node's IPv6 address only. */
static __always_inline int nv_from_underlay6(struct __sk_buff *skb) {
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct nv_ip6 *ip = data + sizeof(struct ethhdr);
    if ((void *)(ip + 1) > end) return NV_TCX_NEXT;
    if (!nv_ip6_is_cfg(ip->daddr, NV_CFG_NODE_IP6_HI, NV_CFG_NODE_IP6_LO)) return NV_TCX_NEXT;
    u8 proto = ip->nexthdr;
    if (proto != IPPROTO_TCP && proto != IPPROTO_UDP && proto != NV_IPPROTO_SCTP) return NV_TCX_NEXT;
    struct nv_pkt p = {};
    if (nv_parse6(ip, end, &p) < 0) return NV_TCX_NEXT;  /* the node's stack judges what it cannot parse */
    u8 client[16];
    __builtin_memcpy(client, p.saddr6, 16);
    struct nv_flow6_key fk;
    nv_flow6_key(&fk, &p);
    struct nv_nat6 *n = revnat6.lookup(&fk);
    if (n) {
        if (n->flags & NV_NATF_REVERSE) {  /* a remote backend's reply to our SNAT address */
            if (nv_nat6_apply(skb, &p, n) < 0) return TC_ACT_SHOT;
            return nv_fib_out6(skb, &p);
        }
        if (nv_nat6_reusable(n, &p)) {
            if (nv_nat6_apply(skb, &p, n) < 0) return TC_ACT_SHOT;
            return nv_underlay_deliver6(skb, &p, client);
        }
    }
    struct nv_svc *s = nv_svc6_find(p.daddr6, p.dport, p.proto);
    if (!s || !(s->flags & NV_SVCF_NODEPORT)) return NV_TCX_NEXT;  /* the node's own traffic */
    u32 how = NV_NATF_OUT | ((s->flags & NV_SVCF_EXTERNAL_LOCAL) ? 0 : NV_NATF_SNAT);
    int r = nv_svc_new_flow6(skb, &p, s, nv_client6(client), how);
    if (r < 0) {
        u32 why = nv_svc_refusal(s);
        nv_count(why);
        nv_traffic(NV_HOOK_FROM_NETWORK, why, p.len);
        nv_emit(&p, NV_ID_WORLD, 0, NV_VERDICT_DENY, why, NV_HOOK_FROM_NETWORK);
        return r == -1 ? nv_svc_answer6(skb, &p, 0) : TC_ACT_SHOT;
    }
    nv_svcstat(NV_SVCSTAT_NODEPORT6);
    return nv_underlay_deliver6(skb, &p, client);
}
/* a pod's IPv6 packet, tail-called from nv_from_pod (ipv6_progs[0]; bpf/datapath6.c says why) */
int nv_from_pod6_prog(struct __sk_buff *skb) { return nv_from_pod6(skb); }
/* ------------------------------------------------------------------ end Services per packet, IPv6 */
