/* NovaNet Geneve (RFC 8926) overlay in tc eBPF: no geneve device, no kernel module.
 *
 * nv_geneve_encap:   tunnel_progs[ENCAP] — tail-called by the datapath's from-pod program for a
 *                    remote destination (skb->cb per the core contract). Pushes outer
 *                    Ethernet/IPv4/UDP/Geneve + the identity option and redirects to the underlay.
 * nv_geneve_ingress: tcx ingress of the underlay device. Pops our Geneve packets, checks that the
 *                    sending node may send from that inner source, marks 0x4000, hands the stamped
 *                    identity to the to-pod program (skb->cb) and redirects to the pod's host veth
 *                    egress, where the datapath's to-pod program enforces ingress policy.
 *
 * Structs, shared and private map declarations, constants and the counter helpers nv_stat/nv_drop
 * are GENERATED (NV_GENERATED, novanet_core.bpf.tunnel.programs) from novanet_core.bpf.layouts and
 * novanet_geneve.layouts/wire. Inner packets: IPv4 or IPv6 (endpoints_v6, the node's IPv6
 * PodCIDR in geneve_nodes); the underlay: IPv4 or IPv6, as the tunnels entry says
 * (NV_TUNNEL_F_IPV6; keyed by the node key: the IPv4 address, or nv_node_key6 of the IPv6 one).
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/in.h>
#include <uapi/linux/tcp.h>
#include <uapi/linux/udp.h>

NV_GENERATED

/* Debian 12's uapi headers are 6.1; the running kernel (>= 6.3) has this flag (checked in its BTF). */
#define GNV_ADJ_ROOM_DECAP_L3_IPV4 (1ULL << 7)
#define GNV_ADJ_ROOM_DECAP_L3_IPV6 (1ULL << 8)
#define GNV_ETH_P_IPV6 0x86DD

/* The fixed IPv6 header (the uapi header drags in more than BCC's tree holds). */
struct gnv_ip6 {
    u8 vtc_flow[4]; u16 payload_len; u8 nexthdr; u8 hop_limit; u8 saddr[16]; u8 daddr[16];
} __attribute__((packed));
#define GNV_AF_INET 2
#define GNV_AF_INET6 10
/* BCC 0.26 declares bpf_redirect_neigh with the pre-5.11 signature (no params): declare the real one. */
static long (*gnv_redirect_neigh)(u32 ifindex, struct bpf_redir_neigh *params, int plen, u64 flags) =
    (void *)BPF_FUNC_redirect_neigh;
#define GNV_IP_DF 0x4000
#define GNV_IP_MF_OFFSET 0x3fff

struct gnv_hdr {
    u8 ver_optlen;  /* Ver(2) | Opt Len(6), in 4-byte words */
    u8 flags;       /* O | C | reserved */
    u16 proto;      /* 0x6558, network order */
    u8 vni[3];
    u8 rsvd;
} __attribute__((packed));

struct gnv_opt {
    u16 opt_class;  /* network order */
    u8 type;
    u8 len;         /* R(3) | Length(5), in 4-byte words, without this 4-byte header */
    u32 identity;   /* network order */
} __attribute__((packed));

struct gnv_encap {
    struct iphdr ip;
    struct udphdr udp;
    struct gnv_hdr gnv;
    struct gnv_opt opt;
    struct ethhdr inner_eth;
} __attribute__((packed));

/* The same over an IPv6 underlay: the outer IPv6 header is 20 bytes longer. */
struct gnv_encap6 {
    struct gnv_ip6 ip6;
    struct udphdr udp;
    struct gnv_hdr gnv;
    struct gnv_opt opt;
    struct ethhdr inner_eth;
} __attribute__((packed));

#define GNV_ENCAP_LEN ((int)sizeof(struct gnv_encap))
#define GNV_ENCAP6_LEN ((int)sizeof(struct gnv_encap6))
_Static_assert(sizeof(struct gnv_encap) == GNV_OVERHEAD, "Geneve overhead differs from wire.OVERHEAD");
_Static_assert(sizeof(struct gnv_encap6) == GNV_OVERHEAD6, "Geneve overhead differs from wire.OVERHEAD6");

/* Geneve header and identity option, after the outer IP and UDP headers (either family). */
static __always_inline void gnv_fill(struct gnv_hdr *g, struct gnv_opt *o, u32 vni, u32 identity) {
    g->ver_optlen = sizeof(struct gnv_opt) / 4;
    g->proto = htons(GNV_ETH_P_TEB);
    g->vni[0] = vni >> 16;
    g->vni[1] = vni >> 8;
    g->vni[2] = vni;
    o->opt_class = htons(GNV_OPT_CLASS);
    o->type = GNV_OPT_TYPE;
    o->len = GNV_OPT_DATA_LEN / 4;
    o->identity = htonl(identity);
}

static __always_inline u16 gnv_ip_csum(struct iphdr *ip) {
    u32 s = 0;
    u16 *p = (u16 *)ip;
#pragma unroll
    for (int i = 0; i < 10; i++) s += p[i];
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    return ~s;
}

/* a (16 bytes, network order) in the prefix net/len? len 0: the node has no such range. */
static __always_inline int gnv_in_cidr6(const u8 *a, const u8 *net, u32 len) {
    if (len == 0 || len > 128) return 0;
    u64 x[2], y[2];
    __builtin_memcpy(x, a, 16);
    __builtin_memcpy(y, net, 16);
    u64 a0 = __builtin_bswap64(x[0]), a1 = __builtin_bswap64(x[1]);  /* numeric, so that masks are shifts */
    u64 n0 = __builtin_bswap64(y[0]), n1 = __builtin_bswap64(y[1]);
    u64 m0 = len >= 64 ? ~0ULL : ~0ULL << (64 - len);
    u64 m1 = len <= 64 ? 0 : len == 128 ? ~0ULL : ~0ULL << (128 - len);
    return (a0 & m0) == (n0 & m0) && (a1 & m1) == (n1 & m1);
}

/* Two IPv6 addresses equal? (__builtin_memcmp would become a call BPF cannot make) */
static __always_inline int gnv_same6(const u8 *x, const u8 *y) {
    u64 a[2], b[2];
    __builtin_memcpy(a, x, 16);
    __builtin_memcpy(b, y, 16);
    return a[0] == b[0] && a[1] == b[1];
}

static __always_inline u64 gnv_cfg(u32 k) {
    u64 *v = config.lookup(&k);
    return v ? *v : 0;
}

/* Push outer Ethernet/IPv6/UDP/Geneve + option (an IPv6 underlay) and send towards nexthop6.
 *
 * The outer UDP checksum is zero, as RFC 6935/6936 allow for tunnels over IPv6 (RFC 8926 §3.3
 * names the conditions): the only receivers are our decap programs, which take a packet only
 * from a node with a tunnels entry (its full address compared), to this node, on our VNI, with a
 * header that parses, and the inner packet carries its own checksums. Computing it is no option
 * here: a GSO skb is cut into segments after this program, and bpf_skb_adjust_room marks it
 * SKB_GSO_UDP_TUNNEL without the _CSUM variant, so the segments could not carry one. */
static __always_inline int gnv_encap6(struct __sk_buff *skb, struct ethhdr *eth, u16 inner_len, u8 tos,
                                      u32 hash, u16 sport, u32 vni, u32 identity, const u8 *remote6,
                                      const u8 *nexthop6, u32 out_ifindex, int gso) {
    struct gnv_encap6 h = {};
    __builtin_memcpy(&h.inner_eth, eth, sizeof(struct ethhdr));
    u64 lw[2] = {gnv_cfg(NV_CFG_NODE_IP6_HI), gnv_cfg(NV_CFG_NODE_IP6_LO)};  /* its bytes as in memory */
    u32 label = hash & 0xFFFFF;  /* flow label: the inner flow's hash, for ECMP as the UDP port */
    h.ip6.vtc_flow[0] = 0x60 | (tos >> 4);
    h.ip6.vtc_flow[1] = (tos << 4) | ((label >> 16) & 0x0f);
    h.ip6.vtc_flow[2] = label >> 8;
    h.ip6.vtc_flow[3] = label;
    h.ip6.payload_len = htons(inner_len + GNV_ENCAP6_LEN - sizeof(struct gnv_ip6));  /* GSO rewrites it */
    h.ip6.nexthdr = IPPROTO_UDP;
    h.ip6.hop_limit = 64;
    __builtin_memcpy(h.ip6.saddr, lw, 16);
    __builtin_memcpy(h.ip6.daddr, remote6, 16);
    h.udp.source = htons(sport);
    h.udp.dest = htons(GNV_PORT);
    h.udp.len = h.ip6.payload_len;
    h.udp.check = 0;
    gnv_fill(&h.gnv, &h.opt, vni, identity);
    u64 flags = BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_ENCAP_L3_IPV6 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP |
                BPF_F_ADJ_ROOM_ENCAP_L2_ETH | BPF_F_ADJ_ROOM_ENCAP_L2(sizeof(struct ethhdr));
    if (bpf_skb_adjust_room(skb, GNV_ENCAP6_LEN, BPF_ADJ_ROOM_MAC, flags))
        return nv_drop(NV_DROP_NO_TUNNEL, GNV_STAT_ENCAP_ERROR);
    if (bpf_skb_store_bytes(skb, sizeof(struct ethhdr), &h, sizeof(h), 0))
        return nv_drop(NV_DROP_NO_TUNNEL, GNV_STAT_ENCAP_ERROR);
    nv_stat(gso ? GNV_STAT_ENCAP_GSO : GNV_STAT_ENCAP);
    struct bpf_redir_neigh nh = {};
    nh.nh_family = GNV_AF_INET6;
    __builtin_memcpy(nh.ipv6_nh, nexthop6, 16);
    return gnv_redirect_neigh(out_ifindex, &nh, sizeof(nh), 0);
}

int nv_geneve_encap(struct __sk_buff *skb) {
    if (skb->cb[0] != NV_CB_ENCAP_MAGIC) return nv_drop(NV_DROP_NO_TUNNEL, GNV_STAT_BAD_CONTEXT);
    u32 identity = skb->cb[1];
    struct nv_tunnel_key tk = { .node_ip = skb->cb[3] };
    struct nv_tunnel *t = tunnels.lookup(&tk);
    if (!t) return nv_drop(NV_DROP_NO_TUNNEL, GNV_STAT_ENCAP_ERROR);
    u32 out_ifindex = t->ifindex, remote = t->remote_ip, vni = t->vni, nexthop = t->remote_ip;
    int outer6 = (t->flags & NV_TUNNEL_F_IPV6) != 0;
    u8 remote6[16], nexthop6[16];
    __builtin_memcpy(remote6, t->remote_ip6, 16);
    __builtin_memcpy(nexthop6, t->remote_ip6, 16);
    struct gnv_node_key nk = { .node_ip = skb->cb[3] };
    struct gnv_node *n = geneve_nodes.lookup(&nk);
    if (n && n->nexthop) nexthop = n->nexthop;
    if (n) {
        u64 w[2];
        __builtin_memcpy(w, n->nexthop6, 16);
        if (w[0] | w[1]) __builtin_memcpy(nexthop6, n->nexthop6, 16);
    }
    u32 local = gnv_cfg(NV_CFG_NODE_IP);
    int enc_len = outer6 ? GNV_ENCAP6_LEN : GNV_ENCAP_LEN;

    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end) return nv_drop(NV_DROP_MALFORMED, GNV_STAT_ENCAP_ERROR);
    u8 tos, proto;
    u16 inner_len;
    int df;
    u32 ihl;
    void *l4p;
    int l4_known = 1;  /* IPv4 options: TCP's header length is taken as 20 */
    if (eth->h_proto == htons(GNV_ETH_P_IPV6)) {
        struct gnv_ip6 *ip6 = (void *)(eth + 1);
        if ((void *)(ip6 + 1) > end) return nv_drop(NV_DROP_MALFORMED, GNV_STAT_ENCAP_ERROR);
        tos = (ip6->vtc_flow[0] << 4) | (ip6->vtc_flow[1] >> 4);  /* the traffic class */
        proto = ip6->nexthdr;
        inner_len = ntohs(ip6->payload_len) + sizeof(*ip6);
        /* Too big: over an IPv6 underlay handed to the stack, whose route to the remote IPv6
         * PodCIDR (tunnel MTU) answers Packet Too Big; over an IPv4 one dropped (MTU_EXCEEDED):
         * the stack has no route to remote IPv6 PodCIDRs there (an IPv6 route cannot take the
         * IPv4 underlay next hop). The pod MTU leaves room for the headers, so only a pod MTU
         * raised by hand meets this. */
        df = outer6;
        ihl = sizeof(*ip6);
        l4p = ip6 + 1;
    } else if (eth->h_proto == htons(ETH_P_IP)) {
        tos = ip->tos;
        proto = ip->protocol;
        inner_len = ntohs(ip->tot_len);
        /* with DF to the stack (frag-needed) only where it has a route: an IPv4 underlay */
        df = !outer6 && (ip->frag_off & htons(GNV_IP_DF)) != 0;
        ihl = ip->ihl * 4;
        l4p = ip + 1;
        l4_known = ihl == 20;
    } else {
        return nv_drop(NV_DROP_MALFORMED, GNV_STAT_ENCAP_ERROR);
    }

    /* The wire packet must fit the underlay: for a GSO skb, one segment (gso_size + headers). */
    u32 mtu = 0;
    bpf_check_mtu(skb, out_ifindex, &mtu, 0, 0);
    u32 seg_l3 = inner_len;
    if (skb->gso_size) {
        u32 l4 = 8;
        if (proto == IPPROTO_TCP) {
            struct tcphdr *th = l4p;
            l4 = 20;
            if (l4_known && (void *)(th + 1) <= end) l4 = th->doff * 4;
        }
        seg_l3 = skb->gso_size + ihl + l4;
    }
    if (mtu && seg_l3 + enc_len > mtu) {  /* outer IP length = inner IP length + 58 (IPv6: + 78) */
        if (df) {  /* the node stack answers ICMP frag-needed / Packet Too Big (routes carry the tunnel MTU) */
            nv_stat(GNV_STAT_OVERSIZE_DF);
            return TC_ACT_OK;
        }
        return nv_drop(NV_DROP_MTU_EXCEEDED, GNV_STAT_OVERSIZE_DROP);
    }

    u32 hash = bpf_get_hash_recalc(skb);
    u16 sport = (u16)((((u64)hash * (GNV_SPORT_MAX - GNV_SPORT_MIN)) >> 32) + GNV_SPORT_MIN);
    int gso = skb->gso_size != 0;
    if (outer6) return gnv_encap6(skb, eth, inner_len, tos, hash, sport, vni, identity, remote6, nexthop6,
                                  out_ifindex, gso);
    struct gnv_encap h = {};
    __builtin_memcpy(&h.inner_eth, eth, sizeof(struct ethhdr));  /* the pod's frame becomes the inner one */
    h.ip.version = 4;
    h.ip.ihl = 5;
    h.ip.tos = tos;
    h.ip.tot_len = htons(inner_len + GNV_ENCAP_LEN);  /* GSO rewrites it per segment */
    h.ip.frag_off = htons(GNV_IP_DF);
    h.ip.ttl = 64;
    h.ip.protocol = IPPROTO_UDP;
    h.ip.saddr = htonl(local);
    h.ip.daddr = htonl(remote);
    h.ip.check = gnv_ip_csum(&h.ip);
    h.udp.source = htons(sport);
    h.udp.dest = htons(GNV_PORT);
    h.udp.len = htons(inner_len + GNV_ENCAP_LEN - sizeof(struct iphdr));
    h.udp.check = 0;  /* a zero UDP checksum is allowed over IPv4 (RFC 8926 §3.4 for IPv4 underlays) */
    gnv_fill(&h.gnv, &h.opt, vni, identity);

    /* FIXED_GSO: the pod MTU already leaves room for the 58 bytes, so gso_size stays the pod's MSS
     * (and inner UDP-GSO skbs are only accepted with it). ENCAP_* set skb->encapsulation, the inner
     * header offsets and SKB_GSO_UDP_TUNNEL, so segmentation/checksum offload see a UDP tunnel. */
    u64 flags = BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP |
                BPF_F_ADJ_ROOM_ENCAP_L2_ETH | BPF_F_ADJ_ROOM_ENCAP_L2(sizeof(struct ethhdr));
    if (bpf_skb_adjust_room(skb, GNV_ENCAP_LEN, BPF_ADJ_ROOM_MAC, flags))
        return nv_drop(NV_DROP_NO_TUNNEL, GNV_STAT_ENCAP_ERROR);
    if (bpf_skb_store_bytes(skb, sizeof(struct ethhdr), &h, sizeof(h), 0))
        return nv_drop(NV_DROP_NO_TUNNEL, GNV_STAT_ENCAP_ERROR);
    nv_stat(gso ? GNV_STAT_ENCAP_GSO : GNV_STAT_ENCAP);
    /* The kernel's neighbour table fills the outer MACs (and resolves ARP on a miss). */
    struct bpf_redir_neigh nh = {};
    nh.nh_family = GNV_AF_INET;
    nh.ipv4_nh = htonl(nexthop);
    return gnv_redirect_neigh(out_ifindex, &nh, sizeof(nh), 0);
}

/* The outer IPv4 or IPv6 header of a packet to our UDP port: its length and the sender's node
 * key (0: not a Geneve packet of ours to look at). An IPv6 outer header must be followed by UDP
 * directly (no extension headers: ours send none). */
static __always_inline u32 gnv_outer(struct __sk_buff *skb, u32 *l3len, u32 *saddr4, u8 *saddr6) {
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end) return 0;
    if (eth->h_proto == htons(ETH_P_IP)) {
        struct iphdr *ip = (void *)(eth + 1);
        struct udphdr *udp = (void *)(ip + 1);
        if ((void *)((struct gnv_hdr *)(udp + 1) + 1) > end) return 0;
        if (ip->protocol != IPPROTO_UDP || ip->ihl != 5 || (ip->frag_off & htons(GNV_IP_MF_OFFSET)) ||
            udp->dest != htons(GNV_PORT))
            return 0;
        *l3len = sizeof(struct iphdr);
        *saddr4 = ntohl(ip->saddr);
        return *saddr4;
    }
    if (eth->h_proto == htons(GNV_ETH_P_IPV6)) {
        struct gnv_ip6 *ip6 = (void *)(eth + 1);
        struct udphdr *udp = (void *)(ip6 + 1);
        if ((void *)((struct gnv_hdr *)(udp + 1) + 1) > end) return 0;
        if (ip6->nexthdr != IPPROTO_UDP || udp->dest != htons(GNV_PORT)) return 0;
        *l3len = sizeof(struct gnv_ip6);
        __builtin_memcpy(saddr6, ip6->saddr, 16);
        return nv_node_key6(saddr6);
    }
    return 0;
}

int nv_geneve_ingress(struct __sk_buff *skb) {
    u32 l3len = 0, outer_saddr = 0;  /* outer_saddr: an IPv4 sender's address, else 0 */
    u8 saddr6[16] = {};
    u32 vtep = gnv_outer(skb, &l3len, &outer_saddr, saddr6);
    if (!vtep) return TC_ACT_OK;  /* not a tunnel packet: the node's own traffic */
    int outer6 = l3len == sizeof(struct gnv_ip6);
    struct gnv_hdr g = {};
    if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr) + l3len + sizeof(struct udphdr), &g, sizeof(g)))
        return TC_ACT_OK;
    if ((g.ver_optlen >> 6) != 0 || g.proto != htons(GNV_ETH_P_TEB))
        return nv_drop(NV_DROP_MALFORMED, GNV_STAT_BAD_HEADER);
    u32 vni = ((u32)g.vni[0] << 16) | ((u32)g.vni[1] << 8) | g.vni[2];
    u32 optlen = (g.ver_optlen & 0x3f) * 4;
    void *data = (void *)(long)skb->data;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > (void *)(long)skb->data_end) return TC_ACT_OK;

    /* Options: find ours (class/type/4 bytes); others are skipped (none of ours is critical). */
    u32 identity = 0, found = 0;
    u32 off = sizeof(struct ethhdr) + l3len + sizeof(struct udphdr) + sizeof(struct gnv_hdr);
    u32 opt_end = off + optlen;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        struct gnv_opt o = {};
        if (off + 4 > opt_end) break;
        if (bpf_skb_load_bytes(skb, off, &o, 4)) break;
        u32 dlen = (o.len & 0x1f) * 4;
        if (o.opt_class == htons(GNV_OPT_CLASS) && o.type == GNV_OPT_TYPE && dlen == GNV_OPT_DATA_LEN &&
            off + 8 <= opt_end && !bpf_skb_load_bytes(skb, off + 4, &o.identity, 4)) {
            identity = ntohl(o.identity);
            found = 1;
        }
        off += 4 + dlen;
    }

    u32 hdrlen = l3len + sizeof(struct udphdr) + sizeof(struct gnv_hdr) + optlen + sizeof(struct ethhdr);
    u16 inner_proto = 0;
    if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr) + hdrlen - 2, &inner_proto, 2) ||
        (inner_proto != htons(ETH_P_IP) && inner_proto != htons(GNV_ETH_P_IPV6)))
        return nv_drop(NV_DROP_MALFORMED, GNV_STAT_BAD_HEADER);
    int v6 = inner_proto == htons(GNV_ETH_P_IPV6);

    /* Trust: the outer source must be a node we have a tunnel to, on its VNI, and the inner
     * source must lie in that node's PodCIDR of its family; only then is the stamped identity
     * believed. */
    struct nv_tunnel_key tk = { .node_ip = vtep };
    struct nv_tunnel *t = tunnels.lookup(&tk);
    struct gnv_node_key nk = { .node_ip = vtep };
    struct gnv_node *n = geneve_nodes.lookup(&nk);
    if (!t || !n || t->vni != vni || outer6 != !!(t->flags & NV_TUNNEL_F_IPV6))
        return nv_drop(NV_DROP_TUNNEL_UNTRUSTED, GNV_STAT_UNTRUSTED);
    /* an IPv6 node key is a hash: the entry's full address must be the sender's */
    if (outer6 && !gnv_same6(t->remote_ip6, saddr6))
        return nv_drop(NV_DROP_TUNNEL_UNTRUSTED, GNV_STAT_UNTRUSTED);

    u32 isrc;  /* numeric; of an IPv6 source, the tunnel contract's cb[2] word */
    struct nv_endpoint *ep;
    if (v6) {
        u8 inner6[32] = {};  /* saddr, daddr */
        if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr) + hdrlen + 8, inner6, 32))
            return nv_drop(NV_DROP_MALFORMED, GNV_STAT_BAD_HEADER);
        if (!gnv_in_cidr6(inner6, n->pod_cidr6, n->pod_cidr6_len))
            return nv_drop(NV_DROP_TUNNEL_UNTRUSTED, GNV_STAT_UNTRUSTED);
        isrc = ((u32)inner6[12] << 24) | ((u32)inner6[13] << 16) | ((u32)inner6[14] << 8) | inner6[15];
        struct nv_endpoint6_key ek6 = {};
        __builtin_memcpy(ek6.ip, inner6 + 16, 16);
        ep = endpoints_v6.lookup(&ek6);
    } else {
        u32 inner[2] = {};  /* saddr, daddr (network order) */
        if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr) + hdrlen + 12, inner, 8))
            return nv_drop(NV_DROP_MALFORMED, GNV_STAT_BAD_HEADER);
        isrc = ntohl(inner[0]);
        u32 idst = ntohl(inner[1]);
        if (n->pod_cidr_len > 32) return nv_drop(NV_DROP_TUNNEL_UNTRUSTED, GNV_STAT_UNTRUSTED);
        u32 mask = n->pod_cidr_len ? 0xFFFFFFFFu << (32 - n->pod_cidr_len) : 0;
        /* ... or be the node itself (a NodePort flow it SNATed to its own address, Services; an
         * IPv4 underlay's: outer_saddr is 0 over IPv6) */
        if ((!n->pod_cidr_len || (isrc & mask) != (n->pod_cidr & mask)) && (!outer_saddr || isrc != outer_saddr))
            return nv_drop(NV_DROP_TUNNEL_UNTRUSTED, GNV_STAT_UNTRUSTED);
        struct nv_endpoint_key ek = { .ip = idst };
        ep = endpoints.lookup(&ek);
    }
    if (!ep || !ep->ifindex) return nv_drop(NV_DROP_NO_ROUTE, GNV_STAT_NO_ENDPOINT);
    u32 ifindex = ep->ifindex;
    struct ethhdr neth = {};
    __builtin_memcpy(neth.h_dest, ep->mac, 6);
    __builtin_memcpy(neth.h_source, ep->host_mac, 6);
    neth.h_proto = inner_proto;
    /* kube-proxy compatibility (core contract: kp_backends): a reply from a Service backend
     * carries the DNAT kube-proxy did on this node; only the node's stack (conntrack) can reverse
     * it, so after decapsulation it goes there (addressed to this device) instead of past it. */
    /* ... and so do a bandwidth-limited pod's packets (core contract: endpoints[].flags), so that
     * conntrack sees its flows whole and the limit's qdiscs apply */
    int to_stack = (ep->flags & NV_ENDPOINT_F_SHAPED) != 0;
    u32 kk = v6 ? NV_CFG_KP_BACKENDS6 : NV_CFG_KP_BACKENDS;
    u64 *kpn = config.lookup(&kk);
    if (!to_stack && !v6 && kpn && *kpn) {
        u8 iph[24] = {};  /* inner IPv4 header without options, then the L4 ports */
        if (!bpf_skb_load_bytes(skb, sizeof(struct ethhdr) + hdrlen, iph, sizeof(iph)) && (iph[0] & 0x0f) == 5 &&
            (iph[9] == IPPROTO_TCP || iph[9] == IPPROTO_UDP || iph[9] == 132)) {
            struct nv_kp_backend_key bk = { .ip = isrc, .port = ((u16)iph[20] << 8) | iph[21], .protocol = iph[9] };
            to_stack = kp_backends.lookup(&bk) != 0;
        }
    } else if (!to_stack && kpn && *kpn) {  /* IPv6: kp_backends6, the ports right after the fixed header */
        u8 ip6h[44] = {};  /* inner IPv6 header, then the L4 ports */
        if (!bpf_skb_load_bytes(skb, sizeof(struct ethhdr) + hdrlen, ip6h, sizeof(ip6h)) &&
            (ip6h[6] == IPPROTO_TCP || ip6h[6] == IPPROTO_UDP || ip6h[6] == 132)) {
            struct nv_kp_backend6_key bk = { .port = ((u16)ip6h[40] << 8) | ip6h[41], .protocol = ip6h[6] };
            __builtin_memcpy(bk.ip, ip6h + 8, 16);
            to_stack = kp_backends6.lookup(&bk) != 0;
        }
    }
    if (to_stack) __builtin_memcpy(neth.h_dest, eth->h_dest, 6);

    int gso = skb->gso_size != 0;
    /* FIXED_GSO: keep gso_size (without it the kernel would grow it by hdrlen and the skb would be
     * re-segmented wrongly). Everything between the outer Ethernet and the inner IP goes. */
    u64 decap = BPF_F_ADJ_ROOM_FIXED_GSO | (v6 ? GNV_ADJ_ROOM_DECAP_L3_IPV6 : GNV_ADJ_ROOM_DECAP_L3_IPV4);
    if (bpf_skb_adjust_room(skb, -(int)hdrlen, BPF_ADJ_ROOM_MAC, decap))
        return nv_drop(NV_DROP_MALFORMED, GNV_STAT_DECAP_ERROR);
    if (bpf_skb_store_bytes(skb, 0, &neth, sizeof(neth), 0))
        return nv_drop(NV_DROP_MALFORMED, GNV_STAT_DECAP_ERROR);
    nv_stat(gso ? GNV_STAT_DECAP_GSO : GNV_STAT_DECAP);
    if (!found) nv_stat(GNV_STAT_NO_IDENTITY_OPTION);

    skb->mark |= NV_TUNNEL_MARK;
    if (to_stack) {
        nv_stat(GNV_STAT_TO_STACK);
        return TC_ACT_OK;
    }
    if (found) {  /* the handoff to the to-pod program (core contract) */
        skb->cb[0] = NV_CB_DECAP_MAGIC;
        skb->cb[1] = identity;
        skb->cb[2] = isrc;
        skb->cb[3] = skb->ingress_ifindex;
    } else {
        skb->cb[0] = 0;
    }
    /* egress of the host veth (not redirect_peer): the datapath's to-pod program runs there */
    return bpf_redirect(ifindex, 0);
}
