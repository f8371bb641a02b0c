"""Device meshes, logical-axis rules and multi-host start-up."""

# A lazy import: ``import jaxspeech.sharding`` stays cheap; names load on first use.
from etils import epy

with epy.lazy_api_imports(globals()):
    from jaxspeech.sharding.mesh import make_mesh, param_shardings
    from jaxspeech.sharding.multihost import DistributedConfig
