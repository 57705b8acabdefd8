"""``llflow demo``: a local web page to try the model (upload or drop a photo, compare input and
result with a before/after slider, change exposure, temperature and number of samples, see the
samples and the uncertainty map, download the full-resolution result).

Standard library only (``http.server`` + one hand-written page, no CDN): nothing beyond the core
package is needed and nothing is fetched from the network. See :mod:`llflow.demo.server`.
"""
