// The page's address carries a one-time boot code, not the server's WebSocket token (a browser's
// command line is readable by every local user). The page trades the code for the socket address.
export async function socketUrl(params) {
  const boot = params.get("boot");
  if (!boot) throw new Error("missing ?boot=<code> in the page address");
  const reply = await fetch(`/session?boot=${encodeURIComponent(boot)}`, { cache: "no-store" });
  if (!reply.ok) throw new Error(`the simulator server refused boot code (${reply.status}): open a fresh address`);
  const { ws } = await reply.json();
  return ws;
}
