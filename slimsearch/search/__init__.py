"""The search engine: driver, trial, storage, samplers, pareto, progress, result.

`slimsearch.search` names both this package and the public API function. Python rebinds a
package's attribute to a subpackage once that subpackage is imported, which would hide the
function; so the package itself is made callable and forwards to `slimsearch.api.search`.
"""

import sys
import types


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from slimsearch.api import search

        return search(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
