"""The router: decides which inputs go to the cloud, and gets them there within budget.
Imports `cloud` (manifests, preprocessing), never `edge`."""
