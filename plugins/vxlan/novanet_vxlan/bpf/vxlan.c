/* NovaNet VXLAN overlay programs (the device is the shared collect-metadata nvx0).
 *
 * nv_vxlan_encap:   tunnel_progs[ENCAP] — tail-called by the datapath's from-pod program for a
 *                   remote destination (skb->cb per the core contract). IPv4 underlay: sets the
 *                   tunnel key from the tunnels map and redirects to nvx0, whose driver
 *                   encapsulates (UDP 4789). IPv6 underlay: pushes outer IPv6/UDP/VXLAN itself
 *                   and sends it out of the underlay device (vx_encap6); the remote's nvx0 receives.
 * nv_vxlan_egress:  tcx egress of nvx0 (frames of the node's own stack: their source MAC, below).
 * nv_vxlan_ingress: tcx ingress of nvx0 (frames the driver decapsulated). Checks that the sending
 *                   VTEP is a node we know, on our VNI, and that the inner source is a pod of that
 *                   node (when the endpoints map knows it); marks 0x4000 and redirects to the pod's
 *                   host veth egress, where the datapath's to-pod program enforces ingress policy
 *                   on the source identity from the endpoints map (remote pods synced by the agent).
 *
 * Structs, map declarations, constants and the counter helpers nv_stat/nv_drop are GENERATED
 * (NV_GENERATED, novanet_core.bpf.tunnel.programs). Inner packets: IPv4 or IPv6 (their own
 * endpoints map, endpoints_v6); the underlay: IPv4 or IPv6, the tunnels entry says which
 * (NV_TUNNEL_F_IPV6; its key is the node key, the IPv4 address or nv_node_key6 of the IPv6 one).
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/in.h>
#include <uapi/linux/tcp.h>
#include <uapi/linux/udp.h>

NV_GENERATED

#define VX_ETH_P_IPV6 0x86DD

/* The fixed IPv6 header (the uapi header drags in more than BCC's tree holds). */
struct vx_ip6 {
    u8 vtc_flow[4]; u16 payload_len; u8 nexthdr; u8 hop_limit; u8 saddr[16]; u8 daddr[16];
} __attribute__((packed));

static __always_inline struct nv_endpoint *vx_endpoint6(const u8 *a) {
    struct nv_endpoint6_key k = {};
    __builtin_memcpy(k.ip, a, 16);
    return endpoints_v6.lookup(&k);
}

/* BCC 0.26 declares bpf_redirect_neigh with the pre-5.11 signature (no params): declare the real one. */
static long (*vx_redirect_neigh)(u32 ifindex, struct bpf_redir_neigh *params, int plen, u64 flags) =
    (void *)BPF_FUNC_redirect_neigh;
#define VX_AF_INET6 10

struct vx_hdr {
    u8 flags;  /* 0x08: the VNI is valid (RFC 7348) */
    u8 rsvd1[3];
    u8 vni[3];
    u8 rsvd2;
} __attribute__((packed));

struct vx_encap6 {
    struct vx_ip6 ip6;
    struct udphdr udp;
    struct vx_hdr vx;
    struct ethhdr inner_eth;
} __attribute__((packed));

#define VX_ENCAP6_LEN ((int)sizeof(struct vx_encap6))
_Static_assert(sizeof(struct vx_encap6) == VX_OVERHEAD6, "VXLAN overhead differs from device.OVERHEAD6");

/* Over an IPv6 underlay: push outer IPv6 + UDP + VXLAN + the inner Ethernet header (to nvx0's
 * MAC, as the driver's path sends it) and send it to the node's next hop on the underlay. Why not
 * the tunnel key as over IPv4: a key set by BPF is never route-cached (TUNNEL_NOCACHE), so the
 * driver then looked the IPv6 route up for every packet; here the outer addresses are the node's
 * and the entry's, and the neighbour table fills in the MACs.
 *
 * The outer UDP checksum is zero (RFC 6935/6936): every receiver is a NovaNet nvx0, created with
 * udp6zerocsumrx, whose ingress program takes a packet only from a node with a tunnels entry (its
 * full address compared) on our VNI, and the inner packet carries its own checksums. Computing it
 * is no option: a GSO skb is cut into segments after this program, and bpf_skb_adjust_room marks it
 * SKB_GSO_UDP_TUNNEL without the _CSUM variant, so the segments could not carry one. */
static __always_inline int vx_encap6(struct __sk_buff *skb, struct nv_tunnel *t, u32 inner_len, u32 out_ifindex) {
    u8 nexthop6[16];
    __builtin_memcpy(nexthop6, t->remote_ip6, 16);
    struct vx_node_key nk = { .node_ip = skb->cb[3] };
    struct vx_node *n = vxlan_nodes.lookup(&nk);
    if (n) {
        u64 w[2];
        __builtin_memcpy(w, n->nexthop6, 16);
        if (w[0] | w[1]) __builtin_memcpy(nexthop6, n->nexthop6, 16);
    }
    u32 hi = NV_CFG_NODE_IP6_HI, lo = NV_CFG_NODE_IP6_LO;
    u64 *h6 = config.lookup(&hi), *l6 = config.lookup(&lo);
    if (!h6 || !l6 || !(*h6 | *l6)) return nv_drop(NV_DROP_NO_TUNNEL, VX_STAT_ENCAP_ERROR);
    u64 src[2] = {*h6, *l6};  /* its bytes as in memory */

    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end) return nv_drop(NV_DROP_MALFORMED, VX_STAT_ENCAP_ERROR);
    struct vx_encap6 h = {};
    __builtin_memcpy(&h.inner_eth, eth, sizeof(struct ethhdr));
    u8 mac[6] = VX_DEVICE_MAC;
    __builtin_memcpy(h.inner_eth.h_dest, mac, 6);
    u32 hash = bpf_get_hash_recalc(skb);
    u32 label = hash & 0xFFFFF;  /* flow label: the inner flow's hash, for ECMP as the UDP port */
    h.ip6.vtc_flow[0] = 0x60;    /* traffic class 0, as the driver's path with a tos-0 key */
    h.ip6.vtc_flow[1] = (label >> 16) & 0x0f;
    h.ip6.vtc_flow[2] = label >> 8;
    h.ip6.vtc_flow[3] = label;
    h.ip6.payload_len = htons(inner_len + VX_ENCAP6_LEN - sizeof(struct vx_ip6));  /* GSO rewrites it */
    h.ip6.nexthdr = IPPROTO_UDP;
    h.ip6.hop_limit = 64;
    __builtin_memcpy(h.ip6.saddr, src, 16);
    __builtin_memcpy(h.ip6.daddr, t->remote_ip6, 16);
    h.udp.source = htons((u16)((((u64)hash * (VX_SPORT_MAX - VX_SPORT_MIN)) >> 32) + VX_SPORT_MIN));
    h.udp.dest = htons(VX_PORT);
    h.udp.len = h.ip6.payload_len;
    h.udp.check = 0;
    h.vx.flags = 0x08;
    h.vx.vni[0] = t->vni >> 16;
    h.vx.vni[1] = t->vni >> 8;
    h.vx.vni[2] = t->vni;
    int gso = skb->gso_size != 0;
    /* FIXED_GSO: the pod MTU already leaves room for the 70 bytes, so gso_size stays the pod's MSS.
     * ENCAP_* set skb->encapsulation, the inner header offsets and SKB_GSO_UDP_TUNNEL, so the skb
     * stays one GSO super-packet up to wherever it is segmented (or received whole over a veth). */
    u64 flags = BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_ENCAP_L3_IPV6 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP |
                BPF_F_ADJ_ROOM_ENCAP_L2_ETH | BPF_F_ADJ_ROOM_ENCAP_L2(sizeof(struct ethhdr));
    if (bpf_skb_adjust_room(skb, VX_ENCAP6_LEN, BPF_ADJ_ROOM_MAC, flags))
        return nv_drop(NV_DROP_NO_TUNNEL, VX_STAT_ENCAP_ERROR);
    if (bpf_skb_store_bytes(skb, sizeof(struct ethhdr), &h, sizeof(h), 0))
        return nv_drop(NV_DROP_NO_TUNNEL, VX_STAT_ENCAP_ERROR);
    nv_stat(gso ? VX_STAT_ENCAP_GSO : VX_STAT_ENCAP);
    struct bpf_redir_neigh nh = {};
    nh.nh_family = VX_AF_INET6;
    __builtin_memcpy(nh.ipv6_nh, nexthop6, 16);
    return vx_redirect_neigh(out_ifindex, &nh, sizeof(nh), 0);
}

/* Two IPv6 addresses equal? (__builtin_memcmp would become a call BPF cannot make) */
static __always_inline int vx_same6(const u8 *x, const u8 *y) {
    u64 a[2], b[2];
    __builtin_memcpy(a, x, 16);
    __builtin_memcpy(b, y, 16);
    return a[0] == b[0] && a[1] == b[1];
}

/* One wire segment's inner L3 length of a GSO skb: gso_size + the L3 and L4 headers (TCP's read
 * at l4 when l4_known, else taken as 20). */
static __always_inline u32 vx_segment(struct __sk_buff *skb, u32 l3hdr, u8 proto, void *l4, int l4_known, void *end) {
    u32 l4len = 8;
    struct tcphdr *th = l4;
    if (proto == IPPROTO_TCP) l4len = (l4_known && (void *)(th + 1) <= end) ? th->doff * 4 : 20;
    return skb->gso_size + l3hdr + l4len;
}

int nv_vxlan_encap(struct __sk_buff *skb) {
    if (skb->cb[0] != NV_CB_ENCAP_MAGIC) return nv_drop(NV_DROP_NO_TUNNEL, VX_STAT_BAD_CONTEXT);
    struct nv_tunnel_key tk = { .node_ip = skb->cb[3] };
    struct nv_tunnel *t = tunnels.lookup(&tk);
    if (!t) return nv_drop(NV_DROP_NO_TUNNEL, VX_STAT_ENCAP_ERROR);
    u32 ifindex = t->ifindex;
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end) return nv_drop(NV_DROP_MALFORMED, VX_STAT_ENCAP_ERROR);
    /* Too big for nvx0 (a pod MTU above underlay - 50): with DF, hand it to the node stack, whose
     * route via nvx0 answers ICMP frag-needed (the driver itself would drop it silently);
     * without DF, drop it rather than let the stack send fragments. GSO: one segment counts.
     * IPv6 is never fragmented on the way (every packet is "DF"): the stack answers Packet Too Big.
     * Over an IPv6 underlay the entry names the underlay device: its MTU less the 70 bytes. */
    int outer6 = (t->flags & NV_TUNNEL_F_IPV6) != 0;
    u32 mtu = 0, len, df, inner_len;
    bpf_check_mtu(skb, ifindex, &mtu, 0, 0);
    if (eth->h_proto == htons(VX_ETH_P_IPV6)) {
        struct vx_ip6 *ip6 = (void *)(eth + 1);
        if ((void *)(ip6 + 1) > end) return nv_drop(NV_DROP_MALFORMED, VX_STAT_ENCAP_ERROR);
        len = inner_len = ntohs(ip6->payload_len) + sizeof(*ip6);
        if (skb->gso_size) len = vx_segment(skb, sizeof(*ip6), ip6->nexthdr, ip6 + 1, 1, end);
        df = 1;
    } else {
        len = inner_len = ntohs(ip->tot_len);
        if (skb->gso_size) len = vx_segment(skb, ip->ihl * 4, ip->protocol, ip + 1, ip->ihl == 5, end);
        df = (ip->frag_off & htons(0x4000)) != 0;
    }
    if (outer6) mtu = mtu > VX_OVERHEAD6 ? mtu - VX_OVERHEAD6 : 0;
    if (mtu && len > mtu) {
        if (df) {
            nv_stat(VX_STAT_OVERSIZE_DF);
            return TC_ACT_OK;
        }
        return nv_drop(NV_DROP_MTU_EXCEEDED, VX_STAT_OVERSIZE_DROP);
    }
    if (outer6) return vx_encap6(skb, t, inner_len, ifindex);
    struct bpf_tunnel_key key = {};
    key.tunnel_id = t->vni;
    key.tunnel_ttl = 64;
    key.remote_ipv4 = t->remote_ip;  /* host order, as the helper wants */
    if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), BPF_F_ZERO_CSUM_TX) < 0)
        return nv_drop(NV_DROP_NO_TUNNEL, VX_STAT_ENCAP_ERROR);
    /* the inner frame is addressed to nvx0's MAC (every node's nvx0 carries the same one), so a
     * receiver without our ingress program (kernel datapath) still takes it as PACKET_HOST */
    data = (void *)(long)skb->data;
    end = (void *)(long)skb->data_end;
    eth = data;
    if ((void *)(eth + 1) > end) return nv_drop(NV_DROP_MALFORMED, VX_STAT_ENCAP_ERROR);
    u8 mac[6] = VX_DEVICE_MAC;
    __builtin_memcpy(eth->h_dest, mac, 6);
    nv_stat(skb->gso_size ? VX_STAT_ENCAP_GSO : VX_STAT_ENCAP);
    return bpf_redirect(ifindex, 0);
}

/* The frame is ours to deliver to dst's host veth (egress: the to-pod program runs there). */
static __always_inline int vx_deliver(struct __sk_buff *skb, struct ethhdr *eth, struct nv_endpoint *dst) {
    u32 ifindex = dst->ifindex;
    __builtin_memcpy(eth->h_dest, dst->mac, 6);
    __builtin_memcpy(eth->h_source, dst->host_mac, 6);
    skb->mark |= NV_TUNNEL_MARK;
    skb->cb[0] = 0;  /* no stamped identity in VXLAN: the to-pod program uses the endpoints map */
    nv_stat(skb->gso_size ? VX_STAT_DECAP_GSO : VX_STAT_DECAP);
    return bpf_redirect(ifindex, 0);
}

/* An IPv6 inner packet: the same checks as IPv4's below with endpoints_v6, and kp_backends6 for
 * the kube-proxy exception. */
static __always_inline int vx_ingress6(struct __sk_buff *skb, struct ethhdr *eth, void *end, u32 vtep) {
    struct vx_ip6 *ip6 = (void *)(eth + 1);
    if ((void *)(ip6 + 1) > end) return nv_drop(NV_DROP_MALFORMED, VX_STAT_BAD_HEADER);
    struct nv_endpoint *src = vx_endpoint6(ip6->saddr);
    if (src && src->node_ip != vtep) return nv_drop(NV_DROP_TUNNEL_UNTRUSTED, VX_STAT_UNTRUSTED);
    struct nv_endpoint *dst = vx_endpoint6(ip6->daddr);
    if (!dst || !dst->ifindex) {
        /* neighbour discovery and the like (link-local, multicast) of the node's own stack */
        if (ip6->daddr[0] == 0xff || (ip6->daddr[0] == 0xfe && (ip6->daddr[1] & 0xc0) == 0x80)) return TC_ACT_OK;
        return nv_drop(NV_DROP_NO_ROUTE, VX_STAT_NO_ENDPOINT);
    }
    if (!src || (dst->flags & NV_ENDPOINT_F_SHAPED)) {  /* as IPv4's, below */
        skb->mark |= NV_TUNNEL_MARK;
        nv_stat(VX_STAT_TO_STACK);
        return TC_ACT_OK;
    }
    /* kube-proxy compatibility, as IPv4's below (core contract: kp_backends6). The ports are read
     * right after the fixed header: kube-proxy's rules match TCP, UDP and SCTP only, and a
     * backend's reply carries no extension header before them. */
    u32 kk = NV_CFG_KP_BACKENDS6;
    u64 *kpn = config.lookup(&kk);
    if (kpn && *kpn && (ip6->nexthdr == IPPROTO_TCP || ip6->nexthdr == IPPROTO_UDP || ip6->nexthdr == 132)) {
        u16 *ports = (void *)(ip6 + 1);
        if ((void *)(ports + 2) > end) return nv_drop(NV_DROP_MALFORMED, VX_STAT_BAD_HEADER);
        struct nv_kp_backend6_key bk = { .port = ntohs(ports[0]), .protocol = ip6->nexthdr };
        __builtin_memcpy(bk.ip, ip6->saddr, 16);
        if (kp_backends6.lookup(&bk)) {
            skb->mark |= NV_TUNNEL_MARK;
            nv_stat(VX_STAT_TO_STACK);
            return TC_ACT_OK;
        }
    }
    return vx_deliver(skb, eth, dst);
}

int nv_vxlan_ingress(struct __sk_buff *skb) {
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end) return TC_ACT_OK;
    if (eth->h_proto != htons(ETH_P_IP) && eth->h_proto != htons(VX_ETH_P_IPV6)) return TC_ACT_OK;
    /* The sending VTEP, as its node key: an IPv4 outer source, else an IPv6 one (the helper
     * refuses the family the packet did not arrive in) */
    struct bpf_tunnel_key key = {};
    u32 vtep;
    int outer6 = 0;
    if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), 0) == 0) {
        vtep = key.remote_ipv4;
    } else if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), BPF_F_TUNINFO_IPV6) == 0) {
        vtep = nv_node_key6((const u8 *)key.remote_ipv6);
        outer6 = 1;
    } else {
        return nv_drop(NV_DROP_MALFORMED, VX_STAT_BAD_HEADER);
    }
    struct nv_tunnel_key tk = { .node_ip = vtep };
    struct nv_tunnel *t = tunnels.lookup(&tk);
    if (!t || t->vni != key.tunnel_id || outer6 != !!(t->flags & NV_TUNNEL_F_IPV6))
        return nv_drop(NV_DROP_TUNNEL_UNTRUSTED, VX_STAT_UNTRUSTED);
    /* an IPv6 node key is a hash: the entry's full address must be the sender's */
    if (outer6 && !vx_same6(t->remote_ip6, (const u8 *)key.remote_ipv6))
        return nv_drop(NV_DROP_TUNNEL_UNTRUSTED, VX_STAT_UNTRUSTED);
    if (eth->h_proto == htons(VX_ETH_P_IPV6)) return vx_ingress6(skb, eth, end, vtep);
    u32 saddr = ntohl(ip->saddr), daddr = ntohl(ip->daddr);
    struct nv_endpoint_key sk = { .ip = saddr };
    struct nv_endpoint *src = endpoints.lookup(&sk);
    if (src && src->node_ip != vtep)  /* a known pod, but of another node: spoofed */
        return nv_drop(NV_DROP_TUNNEL_UNTRUSTED, VX_STAT_UNTRUSTED);
    struct nv_endpoint_key dk = { .ip = daddr };
    struct nv_endpoint *dst = endpoints.lookup(&dk);
    if (!dst || !dst->ifindex) return nv_drop(NV_DROP_NO_ROUTE, VX_STAT_NO_ENDPOINT);
    /* a pod with a bandwidth limit (core contract: endpoints[].flags): its packets cross the node's
     * stack both ways, so that conntrack sees the flow whole and the limit's qdiscs apply. The same
     * for an inner source that is no pod (another node's host process, or traffic it SNATed, e.g.
     * kube-proxy's masquerade towards a ClusterIP): the pod's reply to it leaves through the stack
     * (not a cluster destination), and a stack that saw only the reply would call it INVALID, which
     * kube-proxy's iptables rules drop (KUBE-FORWARD --ctstate INVALID). */
    if (!src || (dst->flags & NV_ENDPOINT_F_SHAPED)) {
        skb->mark |= NV_TUNNEL_MARK;
        nv_stat(VX_STAT_TO_STACK);
        return TC_ACT_OK;
    }
    /* kube-proxy compatibility (core contract: kp_backends): a reply from a Service backend
     * carries the DNAT kube-proxy did on this node; only the node's stack (conntrack) can reverse
     * it, so the packet goes there instead of past it. */
    u32 kk = NV_CFG_KP_BACKENDS;
    u64 *kpn = config.lookup(&kk);
    if (kpn && *kpn && (ip->protocol == IPPROTO_TCP || ip->protocol == IPPROTO_UDP || ip->protocol == 132)) {
        u16 *ports = (void *)ip + ip->ihl * 4;
        if ((void *)(ports + 2) > end) return nv_drop(NV_DROP_MALFORMED, VX_STAT_BAD_HEADER);
        struct nv_kp_backend_key bk = { .ip = saddr, .port = ntohs(ports[0]), .protocol = ip->protocol };
        if (kp_backends.lookup(&bk)) {
            skb->mark |= NV_TUNNEL_MARK;
            nv_stat(VX_STAT_TO_STACK);
            return TC_ACT_OK;
        }
    }
    return vx_deliver(skb, eth, dst);
}

/* tcx egress of nvx0, for frames the node's own stack sends through it (its routes to remote
 * PodCIDRs: host-network processes, and pod traffic the stack forwarded, e.g. after kube-proxy's
 * DNAT). The stack writes nvx0's MAC as their source, and every node's nvx0 carries that same MAC,
 * so the receiving vxlan driver would drop them as a loop ("source is my own address"); they get
 * a MAC of this node's own instead (02:fe + the node key: the IPv4 node IP, or the fold of the
 * IPv6 one on an IPv6-only node). Frames the encap program sent keep the pod's. */
int nv_vxlan_egress(struct __sk_buff *skb) {
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end) return -1;
    u8 dev[6] = VX_DEVICE_MAC;
    for (int i = 0; i < 6; i++)
        if (eth->h_source[i] != dev[i]) return -1;  /* tcx: next program */
    u32 k = NV_CFG_NODE_IP;
    u64 *ip = config.lookup(&k);
    u32 n = ip ? (u32)*ip : 0;
    if (!n) {  /* no IPv4 node address: the IPv6 one (two config words, its bytes as in memory) */
        u32 hi = NV_CFG_NODE_IP6_HI, lo = NV_CFG_NODE_IP6_LO;
        u64 *h = config.lookup(&hi), *l = config.lookup(&lo);
        if (h && l) {
            u64 a[2] = {*h, *l};
            n = nv_node_key6((const u8 *)a);
        }
    }
    u8 mine[6] = {0x02, 0xfe, n >> 24, n >> 16, n >> 8, n};
    __builtin_memcpy(eth->h_source, mine, 6);
    return -1;
}
