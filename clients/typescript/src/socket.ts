/**
 * One WebSocket, from the platform (browsers, Node >= 22) or from the `ws` package (Node 20,
 * which has none), behind the few calls the client needs.
 */

/** What a socket reports. */
export interface SocketEvents {
  /** The upgrade succeeded. */
  open(): void;
  /** A text frame arrived. */
  message(text: string): void;
  /**
   * The socket closed (or never opened). `status` is the HTTP status of a refused upgrade,
   * when the platform tells it (the `ws` package does; browsers do not).
   */
  close(code: number, reason: string, status?: number): void;
}

/** An open (or opening) socket. */
export interface Socket {
  send(text: string): void;
  close(code?: number, reason?: string): void;
  /** Drops the connection at once, without a closing handshake (a connection gone silent). */
  terminate(): void;
}

/** The WebSocket constructor of browsers and of Node >= 22. */
type PlatformWebSocket = new (url: string) => WebSocket;

let wsPackage: Promise<typeof import("ws")> | undefined;

/**
 * Opens a socket to `url`. The token goes in the `Authorization` header where the platform
 * allows headers (`ws`), else in the `token` query parameter (browsers), as the protocol says.
 */
export async function openSocket(
  url: URL,
  token: string,
  events: SocketEvents,
  override?: PlatformWebSocket,
): Promise<Socket> {
  const platform: PlatformWebSocket | undefined =
    override ?? (globalThis as { WebSocket?: PlatformWebSocket }).WebSocket;
  if (platform) {
    const withToken = new URL(url);
    withToken.searchParams.set("token", token);
    return openPlatform(platform, withToken, events);
  }
  wsPackage ??= import("ws");
  const { WebSocket: NodeWebSocket } = await wsPackage;
  let closed = false;
  const close = (code: number, reason: string, status?: number) => {
    if (closed) return;
    closed = true;
    events.close(code, reason, status);
  };
  const socket = new NodeWebSocket(url, {
    headers: { authorization: `Bearer ${token}` },
    maxPayload: 64 * 1024 * 1024,
  });
  socket.on("open", () => events.open());
  socket.on("message", (data, isBinary) => {
    if (!isBinary) events.message(data.toString());
  });
  socket.on("unexpected-response", (_request, response) => {
    const status = response.statusCode ?? 0;
    response.resume();
    socket.terminate();
    close(1006, `the server refused the connection (HTTP ${status})`, status);
  });
  socket.on("error", (error) => close(1006, error.message));
  socket.on("close", (code, reason) => close(code, reason.toString()));
  return {
    send: (text) => socket.send(text),
    close: (code, reason) => {
      if (socket.readyState === socket.CONNECTING) socket.terminate();
      else socket.close(code, reason);
    },
    terminate: () => socket.terminate(),
  };
}

function openPlatform(Ctor: PlatformWebSocket, url: URL, events: SocketEvents): Socket {
  const socket = new Ctor(url.toString());
  let closed = false;
  socket.addEventListener("open", () => events.open());
  socket.addEventListener("message", (event: MessageEvent) => {
    if (typeof event.data === "string") events.message(event.data);
  });
  socket.addEventListener("close", (event: CloseEvent) => {
    if (closed) return;
    closed = true;
    events.close(event.code, event.reason);
  });
  return {
    send: (text) => socket.send(text),
    close: (code, reason) => socket.close(code, reason),
    // A browser has no way to drop a socket without the handshake: close it and stop
    // listening (the client treats it as gone already).
    terminate: () => {
      closed = true;
      socket.close();
    },
  };
}
