/* ------------------------------------------------------------------ Services (load-balancer)
 * Inserted into datapath.c at NV_SERVICES (after the policy and flow-table helpers, before the
 * programs). Layouts: novanet_ebpf_policy/layouts.py, "Services"; behaviour: docs/services.md.
 *
 * Three translation points share the frontend lookup and the backend pick:
 *   - socket level (cgroup connect4/sendmsg4, reversed by recvmsg4/getpeername4): TCP and UDP
 *     from processes in the node's cgroup; their packets already carry the backend's address;
 *   - per packet in nv_from_pod (pods whose sockets the cgroup hooks did not see, SCTP), with
 *     `revnat` entries for both directions and the SVC flag on the flow-table reply entry;
 *   - per packet in nv_from_underlay (NodePort from outside the node; SNAT for
 *     externalTrafficPolicy: Cluster).
 * The IPv6 per-packet paths are bpf/services6.c, with the same model and their own maps.
 * The flow table (`ct`) and NetworkPolicy always see the backend's side of a translated flow:
 * the translated packet going in, the untranslated reply coming back. */

#define NV_NS_PER_S 1000000000ULL
#define NV_IP_OFF 14  /* IPv4 header right after Ethernet */
#define NV_NAT_IDLE_NS (30ULL * NV_NS_PER_S)  /* a UDP/SCTP translation idle this long picks again */
#define NV_SNAT_PORT_MIN 61000  /* above Linux's default ephemeral range (32768-60999) */
#define NV_SNAT_PORT_SPAN 4536
#define NV_ECONNREFUSED 111
/* tcx: "not mine, run the next program" (TC_ACT_OK would end the chain: the underlay interface
 * also carries the tunnel plugin's ingress program) */
#define NV_TCX_NEXT -1

/* nv_svc_from_pod / nv_svc_from_underlay verdicts */
#define NV_SVC_PASS 0     /* not a Service packet */
#define NV_SVC_FORWARD 1  /* translated: the packet and *p are the backend's tuple now */
#define NV_SVC_REVERSE 2  /* a reply to restore: the rewrite is in *rnat, applied after policy */
#define NV_SVC_ANSWERED 3 /* no backend: answered (RST / ICMP) or dropped; *verdict is the tc code */
#define NV_SVC_NEW 4      /* as FORWARD, a new translation (a fresh backend pick) */

/* Declared here with the kernel's signatures: BCC 0.26 lacks the first and declares the second
 * without its plen argument. */
static int (*nv_set_retval)(int) = (void *)BPF_FUNC_set_retval;
static long (*nv_redirect_neigh)(u32 ifindex, void *params, int plen, u64 flags) = (void *)BPF_FUNC_redirect_neigh;

static __always_inline void nv_svcstat(u32 k) {
    u64 *v = svcstats.lookup(&k);
    if (v) *v += 1;
}

static __always_inline struct nv_svc *nv_svc_find(u32 ip, u16 port, u8 proto) {
    struct nv_svc_key k = {};
    k.ip = ip;
    k.port = port;
    k.protocol = proto;
    return services.lookup(&k);
}

/* Why a new connection to s found no backend: none selectable, or the frontend failed closed
 * because its backends did not fit the maps. */
static __always_inline u32 nv_svc_refusal(struct nv_svc *s) {
    return (s->flags & NV_SVCF_UNPROGRAMMED) ? NV_DROP_SERVICE_MAP_FULL : NV_DROP_NO_SERVICE_BACKEND;
}

/* No frontend for ip: while the services map lacks room for some frontend, every serviceCIDR
 * address without one is refused (it may be that frontend's), never sent on untranslated. */
static __always_inline int nv_svc_lost(u32 ip) {
    return nv_cfg(NV_CFG_SERVICES_UNPROGRAMMED) && nv_cfg(NV_CFG_SERVICE_CIDR_PREFIX_LEN) &&
           nv_in_cidr(ip, NV_CFG_SERVICE_CIDR_IP, NV_CFG_SERVICE_CIDR_PREFIX_LEN);
}

/* Backend for a new connection: the pinned one (sessionAffinity, while it is still selectable),
 * else a uniformly random selectable slot. 0 = *out filled; -1 = no selectable backend. */
static __always_inline int nv_svc_pick(struct nv_svc *s, u64 client, struct nv_lb_backend *out) {
    u32 count = s->count;
    if (count == 0) return -1;
    struct nv_aff_key ak = {};
    u64 now = 0;
    if (s->flags & NV_SVCF_AFFINITY) {
        ak.svc_id = s->id;
        ak.client = client;
        now = bpf_ktime_get_ns();
        struct nv_aff *a = affinity.lookup(&ak);
        if (a && now - a->last_ns < (u64)s->affinity_timeout * NV_NS_PER_S) {
            struct nv_lb_member_key mk = {};
            mk.bank = s->bank;
            mk.ip = a->ip;
            mk.port = a->port;
            if (lb_members.lookup(&mk)) {
                out->ip = a->ip;
                out->port = a->port;
                out->flags = 0;
                out->pad = 0;
                a->last_ns = now;  /* kube-proxy's "recent" match: the timeout runs from the last connection */
                return 0;
            }
        }
    }
    struct nv_lb_slot bk = {};
    bk.bank = s->bank;
    bk.slot = bpf_get_prandom_u32() % count;
    struct nv_lb_backend *b = backends.lookup(&bk);
    if (!b) return -1;
    out->ip = b->ip;
    out->port = b->port;
    out->flags = b->flags;
    out->pad = 0;
    if (s->flags & NV_SVCF_AFFINITY) {
        struct nv_aff av = {};
        av.ip = b->ip;
        av.port = b->port;
        av.last_ns = now;
        affinity.update(&ak, &av);
    }
    return 0;
}

/* ------------------------------------------------------------------ socket level */

/* A new socket-level connection to IPv4 ip:port: 1 = not a frontend (leave it), 0 = refused
 * (connect()/sendto() fail with ECONNREFUSED), 2 = *be is the backend, its sock_revnat entry
 * written. Shared by connect4/sendmsg4 and by connect6/sendmsg6 for a v4-mapped address. */
static __always_inline int nv_sock_pick4(struct bpf_sock_addr *ctx, u32 ip, u16 port, u8 proto,
                                         struct nv_lb_backend *be) {
    struct nv_svc *s = nv_svc_find(ip, port, proto);
    if (!s) {
        if (!nv_svc_lost(ip)) return 1;
        nv_count(NV_DROP_SERVICE_MAP_FULL);
        nv_set_retval(-NV_ECONNREFUSED);
        return 0;
    }
    /* the client is the socket's network namespace: one pod, one address */
    if (nv_svc_pick(s, bpf_get_netns_cookie(ctx) | (1ULL << 63), be) < 0) {
        nv_count(nv_svc_refusal(s));
        nv_set_retval(-NV_ECONNREFUSED);  /* connect()/sendto() fail at once, as a REJECT would make them */
        return 0;
    }
    struct nv_sock_nat_key k = {};
    k.cookie = bpf_get_socket_cookie(ctx);
    k.ip = be->ip;
    k.port = be->port;
    k.protocol = proto;
    struct nv_sock_nat v = {};
    v.ip = ip;
    v.port = port;
    sock_revnat.update(&k, &v);
    return 2;
}

static __always_inline int nv_sock_translate(struct bpf_sock_addr *ctx) {
    if (!nv_cfg(NV_CFG_L4LB_ENABLED)) return 1;
    u8 proto = ctx->protocol;
    if (proto != IPPROTO_TCP && proto != IPPROTO_UDP) return 1;
    struct nv_lb_backend be = {};
    int r = nv_sock_pick4(ctx, ntohl(ctx->user_ip4), ntohs((u16)ctx->user_port), proto, &be);
    if (r != 2) return r;
    ctx->user_ip4 = htonl(be.ip);
    ctx->user_port = (u32)htons(be.port);
    nv_svcstat(NV_SVCSTAT_SOCKET);
    return 1;
}

/* The IPv4 frontend a socket asked for, given the backend ip:port it talks to; 0 = none. */
static __always_inline struct nv_sock_nat *nv_sock_revnat4(struct bpf_sock_addr *ctx, u32 ip, u16 port) {
    struct nv_sock_nat_key k = {};
    k.cookie = bpf_get_socket_cookie(ctx);
    k.ip = ip;
    k.port = port;
    k.protocol = ctx->protocol;
    return sock_revnat.lookup(&k);
}

/* recvmsg4 / getpeername4: show the application the frontend it asked for, not the backend. */
static __always_inline int nv_sock_restore(struct bpf_sock_addr *ctx) {
    if (!nv_cfg(NV_CFG_L4LB_ENABLED)) return 1;
    struct nv_sock_nat *v = nv_sock_revnat4(ctx, ntohl(ctx->user_ip4), ntohs((u16)ctx->user_port));
    if (!v) return 1;
    ctx->user_ip4 = htonl(v->ip);
    ctx->user_port = (u32)htons(v->port);
    nv_svcstat(NV_SVCSTAT_REVERSE_SOCKET);
    return 1;
}

int nv_sock_connect4(struct bpf_sock_addr *ctx) { return nv_sock_translate(ctx); }
int nv_sock_sendmsg4(struct bpf_sock_addr *ctx) { return nv_sock_translate(ctx); }
int nv_sock_recvmsg4(struct bpf_sock_addr *ctx) { return nv_sock_restore(ctx); }
int nv_sock_getpeername4(struct bpf_sock_addr *ctx) { return nv_sock_restore(ctx); }

/* ------------------------------------------------------------------ socket level, IPv6
 * The same translation with the IPv6 maps (services6, backends6, lb_members6, affinity6,
 * sock_revnat6). An AF_INET6 socket reaching an IPv4 address uses its v4-mapped form
 * (::ffff:a.b.c.d): the kernel runs only the connect6/sendmsg6 hooks for it (tcp_v6_connect
 * hands a mapped address straight to tcp_v4_connect, past the connect4 hook), so a mapped IPv4
 * ClusterIP is looked up in the IPv4 maps here and answered with the mapped backend. */

static __always_inline void nv_sock_ip6_get(struct bpf_sock_addr *ctx, u8 *ip) {
    u32 w[4];
    w[0] = ctx->user_ip6[0];
    w[1] = ctx->user_ip6[1];
    w[2] = ctx->user_ip6[2];
    w[3] = ctx->user_ip6[3];
    __builtin_memcpy(ip, w, 16);
}

static __always_inline void nv_sock_ip6_set(struct bpf_sock_addr *ctx, const u8 *ip) {
    u32 w[4];
    __builtin_memcpy(w, ip, 16);
    ctx->user_ip6[0] = w[0];
    ctx->user_ip6[1] = w[1];
    ctx->user_ip6[2] = w[2];
    ctx->user_ip6[3] = w[3];
}

/* ::ffff:a.b.c.d? */
static __always_inline int nv_sock_v4mapped(struct bpf_sock_addr *ctx) {
    return ctx->user_ip6[0] == 0 && ctx->user_ip6[1] == 0 && ctx->user_ip6[2] == htonl(0xFFFF);
}

/* As nv_svc_pick, for an IPv6 frontend. */
static __always_inline int nv_svc_pick6(struct nv_svc *s, u64 client, struct nv_lb_backend6 *out) {
    u32 count = s->count;
    if (count == 0) return -1;
    struct nv_aff_key ak = {};
    u64 now = 0;
    if (s->flags & NV_SVCF_AFFINITY) {
        ak.svc_id = s->id;
        ak.client = client;
        now = bpf_ktime_get_ns();
        struct nv_aff6 *a = affinity6.lookup(&ak);
        if (a && now - a->last_ns < (u64)s->affinity_timeout * NV_NS_PER_S) {
            struct nv_lb_member6_key mk = {};
            mk.bank = s->bank;
            __builtin_memcpy(mk.ip, a->ip, 16);
            mk.port = a->port;
            if (lb_members6.lookup(&mk)) {
                __builtin_memcpy(out->ip, a->ip, 16);
                out->port = a->port;
                out->flags = 0;
                out->pad = 0;
                a->last_ns = now;
                return 0;
            }
        }
    }
    struct nv_lb_slot bk = {};
    bk.bank = s->bank;
    bk.slot = bpf_get_prandom_u32() % count;
    struct nv_lb_backend6 *b = backends6.lookup(&bk);
    if (!b) return -1;
    __builtin_memcpy(out->ip, b->ip, 16);
    out->port = b->port;
    out->flags = b->flags;
    out->pad = 0;
    if (s->flags & NV_SVCF_AFFINITY) {
        struct nv_aff6 av = {};
        __builtin_memcpy(av.ip, b->ip, 16);
        av.port = b->port;
        av.last_ns = now;
        affinity6.update(&ak, &av);
    }
    return 0;
}

static __always_inline int nv_sock_translate6(struct bpf_sock_addr *ctx) {
    if (!nv_cfg(NV_CFG_L4LB_ENABLED)) return 1;
    u8 proto = ctx->protocol;
    if (proto != IPPROTO_TCP && proto != IPPROTO_UDP) return 1;
    u16 port = ntohs((u16)ctx->user_port);
    if (nv_sock_v4mapped(ctx)) {
        struct nv_lb_backend be4 = {};
        int r = nv_sock_pick4(ctx, ntohl(ctx->user_ip6[3]), port, proto, &be4);
        if (r != 2) return r;
        ctx->user_ip6[3] = htonl(be4.ip);
        ctx->user_port = (u32)htons(be4.port);
        nv_svcstat(NV_SVCSTAT_SOCKET);
        return 1;
    }
    struct nv_svc6_key sk = {};
    nv_sock_ip6_get(ctx, sk.ip);
    sk.port = port;
    sk.protocol = proto;
    struct nv_svc *s = services6.lookup(&sk);
    if (!s) return 1;  /* no IPv6 serviceCIDR in CONFIG: a frontend without an entry is not refused */
    struct nv_lb_backend6 be = {};
    if (nv_svc_pick6(s, bpf_get_netns_cookie(ctx) | (1ULL << 63), &be) < 0) {
        nv_count(nv_svc_refusal(s));
        nv_set_retval(-NV_ECONNREFUSED);
        return 0;
    }
    struct nv_sock_nat6_key k = {};
    k.cookie = bpf_get_socket_cookie(ctx);
    __builtin_memcpy(k.ip, be.ip, 16);
    k.port = be.port;
    k.protocol = proto;
    struct nv_sock_nat6 v = {};
    __builtin_memcpy(v.ip, sk.ip, 16);
    v.port = port;
    sock_revnat6.update(&k, &v);
    nv_sock_ip6_set(ctx, be.ip);
    ctx->user_port = (u32)htons(be.port);
    nv_svcstat(NV_SVCSTAT_SOCKET6);
    return 1;
}

static __always_inline int nv_sock_restore6(struct bpf_sock_addr *ctx) {
    if (!nv_cfg(NV_CFG_L4LB_ENABLED)) return 1;
    u16 port = ntohs((u16)ctx->user_port);
    if (nv_sock_v4mapped(ctx)) {
        struct nv_sock_nat *v4 = nv_sock_revnat4(ctx, ntohl(ctx->user_ip6[3]), port);
        if (!v4) return 1;
        ctx->user_ip6[3] = htonl(v4->ip);
        ctx->user_port = (u32)htons(v4->port);
        nv_svcstat(NV_SVCSTAT_REVERSE_SOCKET);
        return 1;
    }
    struct nv_sock_nat6_key k = {};
    k.cookie = bpf_get_socket_cookie(ctx);
    nv_sock_ip6_get(ctx, k.ip);
    k.port = port;
    k.protocol = ctx->protocol;
    struct nv_sock_nat6 *v = sock_revnat6.lookup(&k);
    if (!v) return 1;
    nv_sock_ip6_set(ctx, v->ip);
    ctx->user_port = (u32)htons(v->port);
    nv_svcstat(NV_SVCSTAT_REVERSE_SOCKET6);
    return 1;
}

int nv_sock_connect6(struct bpf_sock_addr *ctx) { return nv_sock_translate6(ctx); }
int nv_sock_sendmsg6(struct bpf_sock_addr *ctx) { return nv_sock_translate6(ctx); }
int nv_sock_recvmsg6(struct bpf_sock_addr *ctx) { return nv_sock_restore6(ctx); }
int nv_sock_getpeername6(struct bpf_sock_addr *ctx) { return nv_sock_restore6(ctx); }

/* cgroup/sock release: forget the socket's reverse translation when it closes, so that closed
 * sockets do not fill the LRU maps and push out the entries of sockets still open (a long-lived
 * UDP socket's replies would then show the backend's address). The key carries the backend the
 * socket talks to: for a connected socket (TCP, connected UDP) that is its peer address, which
 * the release hook still reads. Entries of an unconnected UDP socket's sendto()s to several
 * frontends cannot be rebuilt here and are left to the LRU. */
int nv_sock_release(struct bpf_sock *sk) {
    u8 proto = sk->protocol;
    if (proto != IPPROTO_TCP && proto != IPPROTO_UDP) return 1;
    u16 port = ntohs((u16)sk->dst_port);
    if (!port) return 1;  /* never connected: no peer to rebuild the key from */
    u64 cookie = bpf_get_socket_cookie(sk);
    u32 ip4 = 0;
    if (sk->family == 2) {
        ip4 = sk->dst_ip4;
    } else if (sk->family == NV_AF_INET6) {
        u32 w[4];  /* context fields are read one load each, never copied as a block */
        w[0] = sk->dst_ip6[0];
        w[1] = sk->dst_ip6[1];
        w[2] = sk->dst_ip6[2];
        w[3] = sk->dst_ip6[3];
        if (w[0] == 0 && w[1] == 0 && w[2] == htonl(0xFFFF)) {
            ip4 = w[3];  /* v4-mapped: the entry is in sock_revnat */
        } else {
            struct nv_sock_nat6_key k6 = {};
            k6.cookie = cookie;
            __builtin_memcpy(k6.ip, w, 16);
            k6.port = port;
            k6.protocol = proto;
            sock_revnat6.delete(&k6);
            return 1;
        }
    } else {
        return 1;
    }
    struct nv_sock_nat_key k = {};
    k.cookie = cookie;
    k.ip = ntohl(ip4);
    k.port = port;
    k.protocol = proto;
    sock_revnat.delete(&k);
    return 1;
}

/* ------------------------------------------------------------------ per packet: rewriting */

/* SCTP's CRC32c covers the ports but no pseudo-header. A CRC is linear, so changing the first 4
 * bytes of an n+4-byte packet by d changes the CRC by crc(d followed by n zero bytes), which is
 * d * x^(32+8n) mod P: one multiplication by a power the dataplane precomputed into `sctp_crc`
 * (index n), instead of a pass over the whole payload. Reflected representation: bit 31 is x^0,
 * multiplying by x is a right shift with reduction. */
static __always_inline u32 nv_crc_mulmod(u32 a, u32 b) {
    u32 prod = 0;
#pragma clang loop unroll(disable)
    for (int i = 0; i < 32; i++) {
        if (a & (0x80000000u >> i)) prod ^= b;
        b = (b & 1) ? (b >> 1) ^ NV_CRC32C_POLY : b >> 1;
    }
    return prod;
}

/* Rewrite one side (source or destination) of the packet: address, port, checksums. */
static __always_inline int nv_rewrite_side(struct __sk_buff *skb, u32 l4off, u8 proto, int src, u32 old_ip,
                                           u32 new_ip, u16 old_port, u16 new_port) {
    int csum = proto == IPPROTO_TCP ? 16 : proto == IPPROTO_UDP ? 6 : -1;
    u64 mangled = proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
    if (old_ip != new_ip) {
        u32 on = htonl(old_ip), nn = htonl(new_ip);
        if (csum >= 0 && bpf_l4_csum_replace(skb, l4off + csum, on, nn, BPF_F_PSEUDO_HDR | mangled | 4) < 0)
            return -1;
        if (bpf_l3_csum_replace(skb, NV_IP_OFF + 10, on, nn, 4) < 0) return -1;
        if (bpf_skb_store_bytes(skb, NV_IP_OFF + (src ? 12 : 16), &nn, 4, 0) < 0) return -1;
    }
    if (old_port != new_port) {
        u16 op = htons(old_port), np = htons(new_port);
        if (csum >= 0 && bpf_l4_csum_replace(skb, l4off + csum, op, np, mangled | 2) < 0) return -1;
        if (bpf_skb_store_bytes(skb, l4off + (src ? 0 : 2), &np, 2, 0) < 0) return -1;
    }
    return 0;
}

static __always_inline int nv_nat_apply(struct __sk_buff *skb, struct nv_pkt *p, u32 l4off, struct nv_nat *n) {
    u16 osport = p->sport, odport = p->dport;
    if (nv_rewrite_side(skb, l4off, p->proto, 1, p->saddr, n->saddr, p->sport, n->sport) < 0) return -1;
    if (nv_rewrite_side(skb, l4off, p->proto, 0, p->daddr, n->daddr, p->dport, n->dport) < 0) return -1;
    if (p->proto == NV_IPPROTO_SCTP && (osport != n->sport || odport != n->dport)) {
        u32 ports_old = ((u32)htons(odport) << 16) | htons(osport);  /* bytes 0..3 as a little-endian load */
        u32 ports_new = ((u32)htons(n->dport) << 16) | htons(n->sport);
        u32 sctp_len = p->len - (l4off - NV_IP_OFF);
        if (sctp_len < 12 || sctp_len > 0xFFFF) return -1;
        u32 n = sctp_len - 4;
        u32 *xpow = sctp_crc.lookup(&n);
        u32 crc = 0;
        if (!xpow || bpf_skb_load_bytes(skb, l4off + 8, &crc, 4) < 0) return -1;
        crc ^= nv_crc_mulmod(*xpow, ports_old ^ ports_new);
        if (bpf_skb_store_bytes(skb, l4off + 8, &crc, 4, 0) < 0) return -1;
    }
    p->saddr = n->saddr;
    p->daddr = n->daddr;
    p->sport = n->sport;
    p->dport = n->dport;
    return 0;
}

/* After a reverse rewrite whose source is now this node's address (NodePort) the kernel would
 * take the packet for a martian: route it here instead (FIB lookup as for local output). */
static __always_inline int nv_fib_out(struct __sk_buff *skb, struct nv_pkt *p) {
    struct bpf_fib_lookup f = {};
    f.family = 2;  /* AF_INET */
    f.l4_protocol = p->proto;
    f.sport = htons(p->sport);
    f.dport = htons(p->dport);
    f.tot_len = skb->gso_size ? 0 : p->len;  /* a GSO packet is segmented later: no MTU check here */
    f.ipv4_src = htonl(p->saddr);
    f.ipv4_dst = htonl(p->daddr);
    f.ifindex = skb->ifindex;  /* a forwarding lookup, as if it arrived here (no source validation) */
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

/* ------------------------------------------------------------------ per packet: no backend */

static __always_inline u16 nv_csum_fold(s64 sum) {
    u32 c = (u32)sum;
    c = (c & 0xFFFF) + (c >> 16);
    c = (c & 0xFFFF) + (c >> 16);
    return (u16)~c;
}

struct nv_ip4 {  /* an IPv4 header without options, as bytes-in-order fields */
    u8 vihl; u8 tos; u16 tot_len; u16 id; u16 frag_off; u8 ttl; u8 protocol; u16 check; u32 saddr; u32 daddr;
};

static __always_inline void nv_ip4_hdr(struct nv_ip4 *h, u32 saddr_n, u32 daddr_n, u8 proto, u16 len) {
    h->vihl = 0x45;
    h->tos = 0;
    h->tot_len = htons(len);
    h->id = 0;
    h->frag_off = htons(0x4000);
    h->ttl = 64;
    h->protocol = proto;
    h->check = 0;
    h->saddr = saddr_n;
    h->daddr = daddr_n;
    h->check = nv_csum_fold(bpf_csum_diff(0, 0, (void *)h, sizeof(*h), 0));
}

struct nv_rst {
    struct nv_ip4 ip;
    u16 sport; u16 dport; u32 seq; u32 ack; u8 doff; u8 flags; u16 window; u16 check; u16 urg;
};

struct nv_pseudo { u32 saddr; u32 daddr; u8 zero; u8 proto; u16 len; };

struct nv_unreach {
    struct nv_ip4 ip;
    u8 type; u8 code; u16 check; u32 unused;
    u8 orig[28];  /* the offending IPv4 header (no options) and its first 8 payload bytes */
};

/* Turn the packet into the answer a REJECT would give (TCP RST, else ICMP port unreachable) and
 * send it back the way it came: into the pod it came from (from_pod) or out of the device it
 * arrived on. Returns the tc verdict. */
static __always_inline int nv_svc_answer(struct __sk_buff *skb, struct nv_pkt *p, u32 l4off, int from_pod) {
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end) return TC_ACT_SHOT;
    u8 mac[12];
    __builtin_memcpy(mac, eth->h_source, 6);
    __builtin_memcpy(mac + 6, eth->h_dest, 6);
    u32 saddr_n = htonl(p->daddr), daddr_n = htonl(p->saddr);
    u32 out_len;
    if (p->proto == IPPROTO_TCP) {
        if (p->tcp_flags & 0x04) return TC_ACT_SHOT;  /* never answer a RST */
        u8 *t = (void *)(long)skb->data + l4off;
        if ((void *)(t + 20) > end) return TC_ACT_SHOT;
        struct nv_rst r = {};
        u32 seq, ack;
        __builtin_memcpy(&seq, t + 4, 4);
        __builtin_memcpy(&ack, t + 8, 4);
        u32 hlen = (l4off - NV_IP_OFF) + ((t[12] >> 4) * 4);
        u32 seglen = p->len > hlen ? p->len - hlen : 0;
        if (p->tcp_flags & 0x02) seglen += 1;  /* SYN */
        if (p->tcp_flags & 0x01) seglen += 1;  /* FIN */
        r.sport = htons(p->dport);
        r.dport = htons(p->sport);
        r.doff = 5 << 4;
        if (p->tcp_flags & 0x10) {  /* ACK set: RST with seq = their ack (RFC 9293 3.10.7.1) */
            r.seq = ack;
            r.flags = 0x04;
        } else {
            r.ack = htonl(ntohl(seq) + seglen);
            r.flags = 0x14;  /* RST|ACK */
        }
        nv_ip4_hdr(&r.ip, saddr_n, daddr_n, IPPROTO_TCP, sizeof(r));
        struct nv_pseudo ph = { .saddr = saddr_n, .daddr = daddr_n, .zero = 0, .proto = IPPROTO_TCP,
                                .len = htons(sizeof(r) - sizeof(r.ip)) };
        s64 sum = bpf_csum_diff(0, 0, (void *)&ph, sizeof(ph), 0);
        sum = bpf_csum_diff(0, 0, (void *)&r.sport, sizeof(r) - sizeof(r.ip), (u32)sum);
        r.check = nv_csum_fold(sum);
        out_len = NV_IP_OFF + sizeof(r);
        if (bpf_skb_change_tail(skb, out_len, 0) < 0) return TC_ACT_SHOT;
        if (bpf_skb_store_bytes(skb, NV_IP_OFF, &r, sizeof(r), 0) < 0) return TC_ACT_SHOT;
    } else {
        struct nv_unreach u = {};
        if (l4off != NV_IP_OFF + 20) return TC_ACT_SHOT;  /* IP options: not answered */
        if (bpf_skb_load_bytes(skb, NV_IP_OFF, u.orig, sizeof(u.orig)) < 0) return TC_ACT_SHOT;
        u.type = 3;  /* destination unreachable */
        u.code = 3;  /* port unreachable */
        nv_ip4_hdr(&u.ip, saddr_n, daddr_n, IPPROTO_ICMP, sizeof(u));
        u.check = nv_csum_fold(bpf_csum_diff(0, 0, (void *)&u.type, sizeof(u) - sizeof(u.ip), 0));
        out_len = NV_IP_OFF + sizeof(u);
        if (bpf_skb_change_tail(skb, out_len, 0) < 0) return TC_ACT_SHOT;
        if (bpf_skb_store_bytes(skb, NV_IP_OFF, &u, sizeof(u), 0) < 0) return TC_ACT_SHOT;
    }
    if (bpf_skb_store_bytes(skb, 0, mac, 12, 0) < 0) return TC_ACT_SHOT;
    if (from_pod) return bpf_redirect_peer(skb->ifindex, 0);
    return bpf_redirect(skb->ifindex, 0);
}

/* ------------------------------------------------------------------ per packet: new flows */

/* A new flow to frontend s from *p: pick a backend, write both revnat entries, rewrite the
 * packet. snat_ip: replace the client's address (0 = keep it). 0 = translated; -1 = no backend;
 * -2 = no free SNAT port / rewrite failed. */
static __always_inline int nv_svc_new_flow(struct __sk_buff *skb, struct nv_pkt *p, u32 l4off, struct nv_svc *s,
                                           u32 snat_ip, u64 client, u16 out_flags) {
    struct nv_lb_backend be = {};
    if (nv_svc_pick(s, client, &be) < 0) return -1;
    u64 now = bpf_ktime_get_ns();
    u32 saddr = p->saddr;
    u16 sport = p->sport;
    u16 fl = 0;
    if (be.ip == p->saddr) {  /* hairpin: the client is the backend; it must not see its own address */
        saddr = p->daddr;
        fl = NV_NATF_SNAT;
    } else if (snat_ip) {
        saddr = snat_ip;
        fl = NV_NATF_SNAT;
    }
    struct nv_flow_key rk = {};
    rk.src_ip = be.ip;
    rk.dst_ip = saddr;
    rk.src_port = be.port;
    rk.protocol = p->proto;
    rk.dst_port = sport;
    if (snat_ip && be.ip != p->saddr) {
        /* the backend sees the node's address: find a port no other translated flow to this
         * backend uses (the entry for this very client is ours to replace) */
        u32 h = (p->saddr ^ (p->sport << 16) ^ p->sport) * 2654435761u;
        int found = 0;
#pragma clang loop unroll(disable)
        for (int i = 0; i < 8; i++) {
            rk.dst_port = NV_SNAT_PORT_MIN + (h + i * 7919) % NV_SNAT_PORT_SPAN;
            struct nv_nat *o = revnat.lookup(&rk);
            if (!o || (o->daddr == p->saddr && o->dport == p->sport)) { found = 1; break; }
        }
        if (!found) return -2;
        sport = rk.dst_port;
    }
    struct nv_nat rv = {};
    rv.saddr = p->daddr;
    rv.daddr = p->saddr;
    rv.sport = p->dport;
    rv.dport = p->sport;
    rv.flags = NV_NATF_REVERSE | fl | out_flags;
    rv.svc_id = s->id;
    rv.last_ns = now;
    struct nv_nat fv = {};
    fv.saddr = saddr;
    fv.daddr = be.ip;
    fv.sport = sport;
    fv.dport = be.port;
    fv.flags = NV_NATF_FORWARD | fl;
    fv.svc_id = s->id;
    fv.last_ns = now;
    struct nv_flow_key fk;
    nv_flow_key(&fk, p);
    revnat.update(&rk, &rv);  /* reverse first: a reply can never find a forward-only flow */
    revnat.update(&fk, &fv);
    if (nv_nat_apply(skb, p, l4off, &fv) < 0) return -2;
    return 0;
}

/* An existing forward entry is reused unless it is a new TCP connection (SYN without ACK: a
 * reused client port starts over with a fresh pick) or an idle UDP/SCTP translation. */
static __always_inline int nv_nat_reusable(struct nv_nat *n, struct nv_pkt *p) {
    if (p->proto == IPPROTO_TCP) return (p->tcp_flags & 0x12) != 0x02;
    u64 now = bpf_ktime_get_ns();
    if (now - n->last_ns > NV_NAT_IDLE_NS) return 0;
    if (now - n->last_ns > NV_NS_PER_S) n->last_ns = now;  /* refresh at most once a second */
    return 1;
}

/* Can a pod's packet to daddr (not a pod) be for a frontend, or a reply to restore? A ClusterIP
 * (service CIDR), this node's address (NodePort; NodePort Cluster replies come back to it), so
 * the lookups below cost nothing for a pod's traffic to the world. Without a service CIDR
 * configured, anything can. A NodePort Local reply to the world is found through its
 * flow-table entry instead (SVC flag). */
static __always_inline int nv_svc_candidate(u32 daddr) {
    if (!nv_cfg(NV_CFG_L4LB_ENABLED)) return 0;
    if (daddr == (u32)nv_cfg(NV_CFG_NODE_IP)) return 1;
    if (!nv_cfg(NV_CFG_SERVICE_CIDR_PREFIX_LEN)) return 1;
    return nv_in_cidr(daddr, NV_CFG_SERVICE_CIDR_IP, NV_CFG_SERVICE_CIDR_PREFIX_LEN);
}

/* kubeProxyReplacement: false, a ClusterIP: kube-proxy's DNAT happens after this program, so the
 * source's egress policy is decided where the translated packet shows up (to-pod, same node). */
static __always_inline int nv_kp_frontend(u32 daddr) {
    return !nv_cfg(NV_CFG_L4LB_ENABLED) && nv_cfg(NV_CFG_SERVICE_CIDR_PREFIX_LEN) &&
           nv_in_cidr(daddr, NV_CFG_SERVICE_CIDR_IP, NV_CFG_SERVICE_CIDR_PREFIX_LEN);
}

/* From a pod, destination not a pod: an established translation, a reply to restore, or a new
 * flow to a frontend. */
static __always_inline int nv_svc_from_pod(struct __sk_buff *skb, struct nv_pkt *p, u32 l4off, u32 src_id,
                                           struct nv_nat *rnat, int *verdict) {
    if (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP && p->proto != NV_IPPROTO_SCTP) return NV_SVC_PASS;
    struct nv_flow_key fk;
    nv_flow_key(&fk, p);
    struct nv_nat *n = revnat.lookup(&fk);
    if (n) {
        if (n->flags & NV_NATF_REVERSE) {  /* hairpin / NodePort reply: restored after policy */
            __builtin_memcpy(rnat, n, sizeof(*rnat));
            return NV_SVC_REVERSE;
        }
        if (nv_nat_reusable(n, p)) {
            struct nv_nat fv;
            __builtin_memcpy(&fv, n, sizeof(fv));
            if (nv_nat_apply(skb, p, l4off, &fv) < 0) {
                *verdict = TC_ACT_SHOT;
                return NV_SVC_ANSWERED;
            }
            return NV_SVC_FORWARD;
        }
    }
    struct nv_svc *s = nv_svc_find(p->daddr, p->dport, p->proto);
    int r = -1;
    u32 why = NV_DROP_SERVICE_MAP_FULL;
    if (s) {
        r = nv_svc_new_flow(skb, p, l4off, s, 0, p->saddr, 0);
        why = nv_svc_refusal(s);
    } else if (!nv_svc_lost(p->daddr)) {
        return NV_SVC_PASS;
    }
    if (r == 0) {
        nv_svcstat(NV_SVCSTAT_PACKET);
        return NV_SVC_NEW;
    }
    nv_count(why);
    nv_traffic(NV_HOOK_FROM_POD, why, p->len);
    nv_emit(p, src_id, 0, NV_VERDICT_DENY, why, NV_HOOK_FROM_POD);
    *verdict = r == -1 ? nv_svc_answer(skb, p, l4off, 1) : TC_ACT_SHOT;
    return NV_SVC_ANSWERED;
}

/* *fk (client -> backend, untranslated) reuses the tuple of a per-packet translation to that
 * backend: remove the translation's reverse entry (backend -> client) and its forward entry
 * (client -> frontend), so that neither the replies nor the client's next datagram to the
 * frontend inherit it (the next one picks afresh). UDP has no opening packet to tell a new flow
 * by, hence the SVC_FWD flag on the flow-table entry that leads here. */
static __always_inline void nv_svc_forget(struct nv_flow_key *fk) {
    struct nv_flow_key rk = {};
    rk.src_ip = fk->dst_ip;
    rk.dst_ip = fk->src_ip;
    rk.src_port = fk->dst_port;
    rk.dst_port = fk->src_port;
    rk.protocol = fk->protocol;
    struct nv_nat *r = revnat.lookup(&rk);
    if (!r || !(r->flags & NV_NATF_REVERSE)) return;
    struct nv_flow_key ok = {};
    ok.src_ip = r->daddr;
    ok.dst_ip = r->saddr;
    ok.src_port = r->dport;
    ok.dst_port = r->sport;
    ok.protocol = fk->protocol;
    struct nv_nat *f = revnat.lookup(&ok);
    if (f && (f->flags & NV_NATF_FORWARD) && f->daddr == fk->dst_ip && f->dport == fk->dst_port)
        revnat.delete(&ok);
    revnat.delete(&rk);
}

/* The flow-table reply entry of a translated flow says a reverse rewrite is due. */
static __always_inline int nv_svc_reply(struct nv_flow_key *fk, struct nv_nat *rnat) {
    struct nv_nat *n = revnat.lookup(fk);
    if (!n || !(n->flags & NV_NATF_REVERSE)) return 0;
    __builtin_memcpy(rnat, n, sizeof(*rnat));
    return 1;
}

/* to-pod: the reply of a flow translated on this node, from a backend on another node. */
static __always_inline int nv_svc_to_pod(struct __sk_buff *skb, struct nv_pkt *p, struct nv_flow_key *fk) {
    struct nv_nat rnat;
    if (!nv_svc_reply(fk, &rnat)) return TC_ACT_OK;
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct iphdr *ip = data + sizeof(struct ethhdr);
    if ((void *)(ip + 1) > end) return TC_ACT_SHOT;
    u32 l4off = NV_IP_OFF + ip->ihl * 4;
    if (nv_nat_apply(skb, p, l4off, &rnat) < 0) return TC_ACT_SHOT;
    return TC_ACT_OK;
}
/* ------------------------------------------------------------------ NodePort from outside
 * tcx ingress of the node's underlay interface. Only packets addressed to the node's own IP
 * are looked at: a NodePort frontend (new flow), the client's later packets (forward entry),
 * or a remote backend's reply to the address we SNATed to (reverse entry). */

/* Deliver a translated packet to its backend: a local pod (its ingress policy decided here,
 * redirect_peer skips its to-pod hook), or a pod on another node through the tunnel / routing. */
static __always_inline int nv_underlay_deliver(struct __sk_buff *skb, struct nv_pkt *p, u32 client) {
    struct nv_endpoint_key dk = { .ip = p->daddr };
    struct nv_endpoint *dst = endpoints.lookup(&dk);
    if (!dst) return nv_drop(p, NV_ID_WORLD, 0, NV_DROP_NO_ROUTE, NV_HOOK_FROM_NETWORK);
    u32 dst_id = dst->identity;
    if (!nv_is_local(dst)) {
        if (nv_cfg(NV_CFG_MODE) == 0) return nv_tunnel_encap(skb, p, NV_ID_WORLD, dst_id, dst->node_ip);
        return nv_fib_out(skb, p);
    }
    u32 rev = nv_cfg(NV_CFG_POLICY_REVISION);
    struct nv_flow_key fk;
    nv_flow_key(&fk, p);
    /* an opening SYN on a reused client port: the entries are the old connection's */
    struct nv_flow_state *st = nv_tcp_opens(p) ? 0 : ct.lookup(&fk);
    if (st && st->policy_revision == rev) nv_ct_touch(st);
    if (!st || st->policy_revision != rev) {
        struct nv_verdict v = {};
        /* the backend's ingress, with the real client's address (CIDR rules) even when SNATed */
        u32 reason = nv_policy_decide(NV_ID_WORLD, dst_id, client, p->daddr, p->proto, p->dport, 0, 1, 0, &v);
        if (reason) return nv_drop_policy(p, NV_ID_WORLD, dst_id, reason, NV_HOOK_FROM_NETWORK, &v);
        if (nv_ct_admit(&fk, rev, 0, !st, NV_CTF_SVC, 0, 0, NV_ID_WORLD, dst->ifindex, dst_id, 0, 0) < 0)
            return nv_drop(p, NV_ID_WORLD, dst_id, NV_DROP_FLOW_TABLE_FULL, NV_HOOK_FROM_NETWORK);
        if (!st) {
            nv_flowstat(NV_FS_NEW_FLOWS);
            nv_emit(p, NV_ID_WORLD, dst_id, NV_VERDICT_ALLOW, NV_DROP_NONE, NV_HOOK_FROM_NETWORK);
        }
    }
    return nv_redirect_local(skb, p, dst, NV_ID_WORLD, dst_id, NV_HOOK_FROM_NETWORK);
}

static __always_inline int nv_from_underlay6(struct __sk_buff *skb);  /* bpf/services6.c */

int nv_from_underlay(struct __sk_buff *skb) {
    if (!nv_cfg(NV_CFG_L4LB_ENABLED)) return NV_TCX_NEXT;
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end) return NV_TCX_NEXT;
    if (eth->h_proto == htons(NV_ETH_P_IPV6)) return nv_from_underlay6(skb);
    if (eth->h_proto != htons(ETH_P_IP)) return NV_TCX_NEXT;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end) return NV_TCX_NEXT;
    u32 node_ip = nv_cfg(NV_CFG_NODE_IP);
    if (ntohl(ip->daddr) != node_ip) return NV_TCX_NEXT;
    u8 proto = ip->protocol;
    if (proto != IPPROTO_TCP && proto != IPPROTO_UDP && proto != NV_IPPROTO_SCTP) return NV_TCX_NEXT;
    struct nv_pkt p = {};
    if (nv_parse(ip, end, &p) < 0) return NV_TCX_NEXT;  /* the node's stack judges what it cannot parse */
    u32 l4off = NV_IP_OFF + ip->ihl * 4;
    u32 client = p.saddr;
    struct nv_flow_key fk;
    nv_flow_key(&fk, &p);
    struct nv_nat *n = revnat.lookup(&fk);
    if (n) {
        struct nv_nat nat;
        __builtin_memcpy(&nat, n, sizeof(nat));
        if (nat.flags & NV_NATF_REVERSE) {  /* a remote backend's reply to our SNAT address */
            if (nv_nat_apply(skb, &p, l4off, &nat) < 0) return TC_ACT_SHOT;
            return nv_fib_out(skb, &p);
        }
        if (nv_nat_reusable(n, &p)) {
            if (nv_nat_apply(skb, &p, l4off, &nat) < 0) return TC_ACT_SHOT;
            return nv_underlay_deliver(skb, &p, client);
        }
    }
    struct nv_svc *s = nv_svc_find(p.daddr, p.dport, p.proto);
    if (!s || !(s->flags & NV_SVCF_NODEPORT)) return NV_TCX_NEXT;  /* the node's own traffic */
    u32 snat = (s->flags & NV_SVCF_EXTERNAL_LOCAL) ? 0 : node_ip;
    int r = nv_svc_new_flow(skb, &p, l4off, s, snat, p.saddr, NV_NATF_OUT);
    if (r < 0) {
        u32 why = nv_svc_refusal(s);
        nv_count(why);
        nv_traffic(NV_HOOK_FROM_NETWORK, why, p.len);
        nv_emit(&p, NV_ID_WORLD, 0, NV_VERDICT_DENY, why, NV_HOOK_FROM_NETWORK);
        return r == -1 ? nv_svc_answer(skb, &p, l4off, 0) : TC_ACT_SHOT;
    }
    nv_svcstat(NV_SVCSTAT_NODEPORT);
    return nv_underlay_deliver(skb, &p, client);
}
/* ------------------------------------------------------------------ end Services */
