/* NovaNet VXLAN overlay programs (the device is the shared collect-metadata nvx0).
 *
 * nv_vxlan_encap:   tunnel_progs[ENCAP] — tail-called by the datapath's from-pod program for a
 *                   remote destination (skb->cb per the core contract): sets the tunnel key from
 *                   the tunnels map and redirects to nvx0, whose driver encapsulates (UDP 4789).
 * nv_vxlan_egress:  tcx egress of nvx0 (frames of the node's own stack: their source MAC, below).
 * nv_vxlan_ingress: tcx ingress of nvx0 (frames the driver decapsulated). Checks that the sending
 *                   VTEP is a node we know, on our VNI, and that the inner source is a pod of that
 *                   node (when the endpoints map knows it); marks 0x4000 and redirects to the pod's
 *                   host veth egress, where the datapath's to-pod program enforces ingress policy
 *                   on the source identity from the endpoints map (remote pods synced by the agent).
 *
 * Structs, map declarations, constants and the counter helpers nv_stat/nv_drop are GENERATED
 * (NV_GENERATED, novanet_core.bpf.tunnel.programs). IPv4 only.
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/in.h>
#include <uapi/linux/tcp.h>

NV_GENERATED

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
     * without DF, drop it rather than let the stack send fragments. GSO: one segment counts. */
    u32 mtu = 0;
    bpf_check_mtu(skb, ifindex, &mtu, 0, 0);
    u32 len = ntohs(ip->tot_len);
    if (skb->gso_size) {
        u32 l4 = 8;
        struct tcphdr *th = (void *)ip + sizeof(*ip);
        if (ip->protocol == IPPROTO_TCP) l4 = (ip->ihl == 5 && (void *)(th + 1) <= end) ? th->doff * 4 : 20;
        len = skb->gso_size + ip->ihl * 4 + l4;
    }
    if (mtu && len > mtu) {
        if (ip->frag_off & htons(0x4000)) {
            nv_stat(VX_STAT_OVERSIZE_DF);
            return TC_ACT_OK;
        }
        return nv_drop(NV_DROP_MTU_EXCEEDED, VX_STAT_OVERSIZE_DROP);
    }
    struct bpf_tunnel_key key = {};
    key.remote_ipv4 = t->remote_ip;  /* host order, as the helper wants */
    key.tunnel_id = t->vni;
    key.tunnel_ttl = 64;
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

int nv_vxlan_ingress(struct __sk_buff *skb) {
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end || eth->h_proto != htons(ETH_P_IP)) return TC_ACT_OK;
    struct bpf_tunnel_key key = {};
    if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), 0) < 0)
        return nv_drop(NV_DROP_MALFORMED, VX_STAT_BAD_HEADER);
    u32 saddr = ntohl(ip->saddr), daddr = ntohl(ip->daddr);
    struct nv_tunnel_key tk = { .node_ip = key.remote_ipv4 };
    struct nv_tunnel *t = tunnels.lookup(&tk);
    if (!t || t->vni != key.tunnel_id) return nv_drop(NV_DROP_TUNNEL_UNTRUSTED, VX_STAT_UNTRUSTED);
    struct nv_endpoint_key sk = { .ip = saddr };
    struct nv_endpoint *src = endpoints.lookup(&sk);
    if (src && src->node_ip != key.remote_ipv4)  /* a known pod, but of another node: spoofed */
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
    u32 ifindex = dst->ifindex;
    __builtin_memcpy(eth->h_dest, dst->mac, 6);
    __builtin_memcpy(eth->h_source, dst->host_mac, 6);
    skb->mark |= NV_TUNNEL_MARK;
    skb->cb[0] = 0;  /* no stamped identity in VXLAN: the to-pod program uses the endpoints map */
    nv_stat(skb->gso_size ? VX_STAT_DECAP_GSO : VX_STAT_DECAP);
    return bpf_redirect(ifindex, 0);  /* host veth egress: the datapath's to-pod program runs */
}

/* tcx egress of nvx0, for frames the node's own stack sends through it (its routes to remote
 * PodCIDRs: host-network processes, and pod traffic the stack forwarded, e.g. after kube-proxy's
 * DNAT). The stack writes nvx0's MAC as their source, and every node's nvx0 carries that same MAC,
 * so the receiving vxlan driver would drop them as a loop ("source is my own address"); they get
 * a MAC of this node's own instead (02:fe + the node IP). Frames the encap program sent keep the
 * pod's. */
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
    u8 mine[6] = {0x02, 0xfe, n >> 24, n >> 16, n >> 8, n};
    __builtin_memcpy(eth->h_source, mine, 6);
    return -1;
}
