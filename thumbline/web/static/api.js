// The gateway's JSON API, with the read key of this browser tab.
//
// The key lives in sessionStorage (this tab, until it closes) and travels in the
// Authorization header: never in a URL, a cookie or the page's HTML.

const KEY = 'thumbline.key';

export class ApiError extends Error {
  constructor(status, message, retriable = false) {
    super(message);
    this.status = status;
    this.retriable = retriable;
  }
}

export const key = () => sessionStorage.getItem(KEY);
export const setKey = (value) => sessionStorage.setItem(KEY, value);
export const forgetKey = () => sessionStorage.removeItem(KEY);

/**
 * GET a JSON route: {body, headers}. params: URLSearchParams or [[name, value]].
 * Throws ApiError: status 0 when the gateway does not answer.
 */
export async function get(path, params = [], signal = undefined) {
  const url = new URL(path, window.location.origin);
  for (const [name, value] of params) url.searchParams.append(name, value);
  const headers = { Accept: 'application/json' };
  const secret = key();
  if (secret) headers.Authorization = `Bearer ${secret}`;
  let response;
  try {
    response = await fetch(url.pathname + url.search, {
      headers, signal, cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer',
    });
  } catch (error) {
    if (error.name === 'AbortError') throw error;
    throw new ApiError(0, 'The gateway did not answer: is thumbline running?', true);
  }
  if (!response.ok) {
    let body = {};
    try { body = await response.json(); } catch { /* not JSON: the status says it */ }
    throw new ApiError(response.status, body.error || `${response.status} ${response.statusText}`,
      Boolean(body.retriable));
  }
  return { body: await response.json(), headers: response.headers };
}
