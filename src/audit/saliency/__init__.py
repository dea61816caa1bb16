"""Saliency: where a model looks. Attribution methods registered by name and face
regions (:mod:`~audit.saliency.maps`), and the audit of a sample's maps: region enrichment,
sanity checks, subgroup comparisons (:mod:`~audit.saliency.scoring`). Torch is imported only
when a map is computed.
"""

from audit._lazy import exports

_NAMES = {
    "MapSet": "maps",
    "SaliencyAudit": "scoring",
    "attribute_maps": "maps",
    "audit_sample": "scoring",
    "create_attribution": "maps",
    "list_attributions": "maps",
    "region_template": "maps",
    "register_attribution": "maps",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = exports(__name__, _NAMES)
