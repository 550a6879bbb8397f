/**
 * The envd version the daemon reports to E2B clients. E2B's SDKs switch
 * features on by this number, so it must name exactly what the in-sandbox
 * API implements — no more (the SDK would call what is missing), no less
 * (it would fall back to older, slower paths). docs/e2b.md lists the gates.
 */
export const ENVD_VERSION = '0.5.7';
