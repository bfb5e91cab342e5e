/** Which failures of an API request mean the server is not there or not answering. */
import * as k8s from "@kubernetes/client-node";

const NETWORK_ERROR_CODES = new Set([
  "ECONNREFUSED", "ECONNRESET", "ECONNABORTED", "EHOSTUNREACH", "ENETUNREACH", "ENOTFOUND", "EAI_AGAIN",
  "ETIMEDOUT", "EPIPE", "ESOCKETTIMEDOUT", "UND_ERR_SOCKET", "UND_ERR_CONNECT_TIMEOUT", "ERR_STREAM_PREMATURE_CLOSE",
]);

/** Network failures, timeouts, 5xx and 429: the server is not there or not answering. */
export function isUnavailable(err: unknown): boolean {
  if (err instanceof k8s.ApiException) return err.code >= 500 || err.code === 429;
  if (!(err instanceof Error)) return false;
  const status = (err as { statusCode?: unknown }).statusCode; // a watch that the server refused
  if (typeof status === "number") return status >= 500 || status === 429;
  if (err.name === "AbortError" || err.name === "TimeoutError" || err.name === "FetchError") return true;
  const code = (err as { code?: unknown; errno?: unknown }).code ?? (err as { errno?: unknown }).errno;
  return typeof code === "string" && NETWORK_ERROR_CODES.has(code);
}
