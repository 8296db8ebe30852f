// The gateway's /docs: Swagger UI (vendor/swagger-ui, served from the package) on the
// gateway's own spec. A file rather than an inline script: the Content-Security-Policy
// allows scripts from the gateway's origin only. Paths are relative, so the page works
// behind a proxy that serves the gateway under a prefix.
/* global SwaggerUIBundle */
window.ui = SwaggerUIBundle({
  url: new URL("openapi.json", document.baseURI).href,
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  presets: [SwaggerUIBundle.presets.apis],
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  // never ask validator.swagger.io about the spec: nothing leaves this origin
  validatorUrl: null,
});
