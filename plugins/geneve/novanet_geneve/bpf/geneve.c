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
 * novanet_geneve.layouts/wire. IPv4 only.
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
#define GNV_AF_INET 2
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

#define GNV_ENCAP_LEN ((int)sizeof(struct gnv_encap))
_Static_assert(sizeof(struct gnv_encap) == GNV_OVERHEAD, "Geneve overhead differs from wire.OVERHEAD");

static __always_inline u16 gnv_ip_csum(struct iphdr *ip) {
    u32 s = 0;
    u16 *p = (u16 *)ip;
#pragma unroll
    for (int i = 0; i < 10; i++) s += p[i];
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    return ~s;
}

static __always_inline u64 gnv_cfg(u32 k) {
    u64 *v = config.lookup(&k);
    return v ? *v : 0;
}

int nv_geneve_encap(struct __sk_buff *skb) {
    if (skb->cb[0] != NV_CB_ENCAP_MAGIC) return nv_drop(NV_DROP_NO_TUNNEL, GNV_STAT_BAD_CONTEXT);
    u32 identity = skb->cb[1];
    struct nv_tunnel_key tk = { .node_ip = skb->cb[3] };
    struct nv_tunnel *t = tunnels.lookup(&tk);
    if (!t) return nv_drop(NV_DROP_NO_TUNNEL, GNV_STAT_ENCAP_ERROR);
    u32 out_ifindex = t->ifindex, remote = t->remote_ip, vni = t->vni, nexthop = t->remote_ip;
    struct gnv_node_key nk = { .node_ip = skb->cb[3] };
    struct gnv_node *n = geneve_nodes.lookup(&nk);
    if (n && n->nexthop) nexthop = n->nexthop;
    u32 local = gnv_cfg(NV_CFG_NODE_IP);

    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end || eth->h_proto != htons(ETH_P_IP))
        return nv_drop(NV_DROP_MALFORMED, GNV_STAT_ENCAP_ERROR);
    u8 tos = ip->tos, proto = ip->protocol;
    u16 inner_len = ntohs(ip->tot_len);
    int df = (ip->frag_off & htons(GNV_IP_DF)) != 0;
    u32 ihl = ip->ihl * 4;

    /* The wire packet must fit the underlay: for a GSO skb, one segment (gso_size + headers). */
    u32 mtu = 0;
    bpf_check_mtu(skb, out_ifindex, &mtu, 0, 0);
    u32 seg_l3 = inner_len;
    if (skb->gso_size) {
        u32 l4 = 8;
        if (proto == IPPROTO_TCP) {
            struct tcphdr *th = (void *)ip + sizeof(*ip);
            l4 = 20;
            if (ihl == 20 && (void *)(th + 1) <= end) l4 = th->doff * 4;
        }
        seg_l3 = skb->gso_size + ihl + l4;
    }
    if (mtu && seg_l3 + GNV_ENCAP_LEN > mtu) {  /* outer IP length = inner IP length + 58 */
        if (df) {  /* the node stack answers ICMP frag-needed (routes carry the tunnel MTU) */
            nv_stat(GNV_STAT_OVERSIZE_DF);
            return TC_ACT_OK;
        }
        return nv_drop(NV_DROP_MTU_EXCEEDED, GNV_STAT_OVERSIZE_DROP);
    }

    struct gnv_encap h = {};
    __builtin_memcpy(&h.inner_eth, eth, sizeof(struct ethhdr));  /* the pod's frame becomes the inner one */
    u32 hash = bpf_get_hash_recalc(skb);
    u16 sport = (u16)((((u64)hash * (GNV_SPORT_MAX - GNV_SPORT_MIN)) >> 32) + GNV_SPORT_MIN);
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
    h.gnv.ver_optlen = sizeof(struct gnv_opt) / 4;
    h.gnv.proto = htons(GNV_ETH_P_TEB);
    h.gnv.vni[0] = vni >> 16;
    h.gnv.vni[1] = vni >> 8;
    h.gnv.vni[2] = vni;
    h.opt.opt_class = htons(GNV_OPT_CLASS);
    h.opt.type = GNV_OPT_TYPE;
    h.opt.len = GNV_OPT_DATA_LEN / 4;
    h.opt.identity = htonl(identity);

    /* FIXED_GSO: the pod MTU already leaves room for the 58 bytes, so gso_size stays the pod's MSS
     * (and inner UDP-GSO skbs are only accepted with it). ENCAP_* set skb->encapsulation, the inner
     * header offsets and SKB_GSO_UDP_TUNNEL, so segmentation/checksum offload see a UDP tunnel. */
    u64 flags = BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP |
                BPF_F_ADJ_ROOM_ENCAP_L2_ETH | BPF_F_ADJ_ROOM_ENCAP_L2(sizeof(struct ethhdr));
    int gso = skb->gso_size != 0;
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

int nv_geneve_ingress(struct __sk_buff *skb) {
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = (void *)(eth + 1);
    struct udphdr *udp = (void *)(ip + 1);
    struct gnv_hdr *g = (void *)(udp + 1);
    if ((void *)(g + 1) > end) return TC_ACT_OK;
    if (eth->h_proto != htons(ETH_P_IP) || ip->protocol != IPPROTO_UDP || ip->ihl != 5 ||
        (ip->frag_off & htons(GNV_IP_MF_OFFSET)) || udp->dest != htons(GNV_PORT))
        return TC_ACT_OK;  /* not a tunnel packet: the node's own traffic */
    if ((g->ver_optlen >> 6) != 0 || g->proto != htons(GNV_ETH_P_TEB))
        return nv_drop(NV_DROP_MALFORMED, GNV_STAT_BAD_HEADER);
    u32 vni = ((u32)g->vni[0] << 16) | ((u32)g->vni[1] << 8) | g->vni[2];
    u32 optlen = (g->ver_optlen & 0x3f) * 4;
    u32 outer_saddr = ntohl(ip->saddr);

    /* Options: find ours (class/type/4 bytes); others are skipped (none of ours is critical). */
    u32 identity = 0, found = 0;
    u32 off = sizeof(struct ethhdr) + sizeof(struct iphdr) + sizeof(struct udphdr) + sizeof(struct gnv_hdr);
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

    u32 hdrlen = sizeof(struct iphdr) + sizeof(struct udphdr) + sizeof(struct gnv_hdr) + optlen +
                 sizeof(struct ethhdr);
    u16 inner_proto = 0;
    u32 inner[2] = {};  /* saddr, daddr (network order) */
    if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr) + hdrlen - 2, &inner_proto, 2) ||
        inner_proto != htons(ETH_P_IP) ||
        bpf_skb_load_bytes(skb, sizeof(struct ethhdr) + hdrlen + 12, inner, 8))
        return nv_drop(NV_DROP_MALFORMED, GNV_STAT_BAD_HEADER);
    u32 isrc = ntohl(inner[0]), idst = ntohl(inner[1]);

    /* Trust: the outer source must be a node we have a tunnel to, on its VNI, and the inner
     * source must lie in that node's PodCIDR; only then is the stamped identity believed. */
    struct nv_tunnel_key tk = { .node_ip = outer_saddr };
    struct nv_tunnel *t = tunnels.lookup(&tk);
    struct gnv_node_key nk = { .node_ip = outer_saddr };
    struct gnv_node *n = geneve_nodes.lookup(&nk);
    if (!t || !n || t->vni != vni || n->pod_cidr_len > 32)
        return nv_drop(NV_DROP_TUNNEL_UNTRUSTED, GNV_STAT_UNTRUSTED);
    u32 mask = n->pod_cidr_len ? 0xFFFFFFFFu << (32 - n->pod_cidr_len) : 0;
    /* ... or be the node itself (a NodePort flow it SNATed to its own address, Services) */
    if ((isrc & mask) != (n->pod_cidr & mask) && isrc != outer_saddr)
        return nv_drop(NV_DROP_TUNNEL_UNTRUSTED, GNV_STAT_UNTRUSTED);

    struct nv_endpoint_key ek = { .ip = idst };
    struct nv_endpoint *ep = endpoints.lookup(&ek);
    if (!ep || !ep->ifindex) return nv_drop(NV_DROP_NO_ROUTE, GNV_STAT_NO_ENDPOINT);
    u32 ifindex = ep->ifindex;
    struct ethhdr neth = {};
    __builtin_memcpy(neth.h_dest, ep->mac, 6);
    __builtin_memcpy(neth.h_source, ep->host_mac, 6);
    neth.h_proto = htons(ETH_P_IP);
    /* kube-proxy compatibility (core contract: kp_backends): a reply from a Service backend
     * carries the DNAT kube-proxy did on this node; only the node's stack (conntrack) can reverse
     * it, so after decapsulation it goes there (addressed to this device) instead of past it. */
    /* ... and so do a bandwidth-limited pod's packets (core contract: endpoints[].flags), so that
     * conntrack sees its flows whole and the limit's qdiscs apply */
    int to_stack = (ep->flags & NV_ENDPOINT_F_SHAPED) != 0;
    u32 kk = NV_CFG_KP_BACKENDS;
    u64 *kpn = config.lookup(&kk);
    if (!to_stack && kpn && *kpn) {
        u8 iph[24] = {};  /* inner IPv4 header without options, then the L4 ports */
        if (!bpf_skb_load_bytes(skb, sizeof(struct ethhdr) + hdrlen, iph, sizeof(iph)) && (iph[0] & 0x0f) == 5 &&
            (iph[9] == IPPROTO_TCP || iph[9] == IPPROTO_UDP || iph[9] == 132)) {
            struct nv_kp_backend_key bk = { .ip = isrc, .port = ((u16)iph[20] << 8) | iph[21], .protocol = iph[9] };
            to_stack = kp_backends.lookup(&bk) != 0;
        }
    }
    if (to_stack) __builtin_memcpy(neth.h_dest, eth->h_dest, 6);

    int gso = skb->gso_size != 0;
    /* FIXED_GSO: keep gso_size (without it the kernel would grow it by hdrlen and the skb would be
     * re-segmented wrongly). Everything between the outer Ethernet and the inner IP goes. */
    if (bpf_skb_adjust_room(skb, -(int)hdrlen, BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_FIXED_GSO | GNV_ADJ_ROOM_DECAP_L3_IPV4))
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
