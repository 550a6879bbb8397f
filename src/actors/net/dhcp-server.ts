/** DHCP for the one guest on a link: always offers the configured address. */

import {
  buildDhcpReply,
  DHCP_CLIENT_PORT,
  DHCP_SERVER_PORT,
  DHCPACK,
  DHCPDISCOVER,
  DHCPINFORM,
  DHCPNAK,
  DHCPOFFER,
  DHCPREQUEST,
  type DhcpLease,
  parseDhcp,
} from '../../protocol/net/dhcp.js';
import { BROADCAST_MAC } from '../../protocol/net/ethernet.js';
import { buildUdpFrame } from '../../protocol/net/udp.js';
import type { NetConfig } from './config.js';

const LEASE_SECONDS = 86_400;

export class DhcpServer {
  readonly stats = { offers: 0, acks: 0, naks: 0 };
  private readonly lease: DhcpLease;

  constructor(
    private readonly config: NetConfig,
    private readonly gatewayMac: Uint8Array,
  ) {
    const mask = config.prefix === 0 ? 0 : (0xffffffff << (32 - config.prefix)) >>> 0;
    this.lease = {
      serverIp: config.gatewayIp,
      clientIp: config.guestIp,
      netmask: mask,
      router: config.gatewayIp,
      dns: [config.dnsIp],
      leaseSeconds: LEASE_SECONDS,
      mtu: config.mtu,
      hostname: config.hostname,
    };
  }

  /** Handles one client message (the UDP payload); returns the reply frame, if any. */
  handle(buf: Uint8Array, off: number, len: number): Uint8Array | undefined {
    const req = parseDhcp(buf, off, len);
    if (!req) return undefined;
    let type: number;
    if (req.messageType === DHCPDISCOVER) {
      type = DHCPOFFER;
      this.stats.offers++;
    } else if (req.messageType === DHCPREQUEST) {
      if (req.serverId !== 0 && req.serverId !== this.config.gatewayIp) return undefined; // chose another server
      const wanted = req.requestedIp || req.ciaddr;
      if (wanted === this.config.guestIp) {
        type = DHCPACK;
        this.stats.acks++;
      } else {
        type = DHCPNAK;
        this.stats.naks++;
      }
    } else if (req.messageType === DHCPINFORM) {
      type = DHCPACK;
      this.stats.acks++;
    } else {
      return undefined;
    }
    const payload = buildDhcpReply(req, type, this.lease);
    // Clients without an address yet get the reply broadcast (RFC 2131 §4.1).
    const toBroadcast = type === DHCPNAK || req.ciaddr === 0 || (req.flags & 0x8000) !== 0;
    return buildUdpFrame(
      {
        dstMac: toBroadcast ? BROADCAST_MAC : req.chaddr,
        srcMac: this.gatewayMac,
        srcIp: this.config.gatewayIp,
        srcPort: DHCP_SERVER_PORT,
        dstIp: toBroadcast ? 0xffffffff : req.ciaddr,
        dstPort: DHCP_CLIENT_PORT,
      },
      payload,
    );
  }
}
