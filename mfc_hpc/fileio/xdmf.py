"""An XDMF sidecar so ParaView/VisIt open ``rho_c`` and ``phi_c`` of a solution or checkpoint
on the rectilinear (depth, state) mesh: 2-D ``(t, x)`` for ``d = 1``, 3-D
``(t, x_1, x_2)`` for ``d = 2`` (XDMF's x the last state axis, its z depth)."""
from __future__ import annotations

from pathlib import Path

from .layout import STATE

__all__ = ["write_xdmf"]


def write_xdmf(h5path: str | Path, nodes: tuple[int, ...], N: int, K: int, names: tuple[str, ...] = STATE) -> Path:
    """Write ``*.xmf`` next to ``h5path`` (call on one rank)."""
    h5path = Path(h5path)
    ref = h5path.name
    nodes = tuple(nodes)
    nd = len(nodes)
    dims = " ".join(map(str, (N + 1,) + nodes))
    full = " ".join(map(str, (N + 1, K) + nodes))
    rank = nd + 2

    def item(name: str, c: int) -> str:
        start = " ".join(["0", str(c)] + ["0"] * nd)
        stride = " ".join(["1"] * rank)
        count = " ".join(map(str, (N + 1, 1) + nodes))
        return (f'      <Attribute Name="{name}_{c}" AttributeType="Scalar" Center="Node">\n'
                f'        <DataItem ItemType="HyperSlab" Dimensions="{dims}" Type="HyperSlab">\n'
                f'          <DataItem Dimensions="3 {rank}" Format="XML">{start} {stride} {count}</DataItem>\n'
                f'          <DataItem Dimensions="{full}" NumberType="Float" Precision="8" '
                f'Format="HDF">{ref}:/{name}</DataItem>\n'
                f'        </DataItem>\n      </Attribute>\n')

    body = "".join(item(n, c) for n in names for c in range(K))
    if nd == 1:
        topo, geo = "2DRectMesh", "VXVY"
        coords = [("x", nodes[0]), ("t", N + 1)]
    else:
        topo, geo = "3DRectMesh", "VXVYVZ"
        coords = [("x2", nodes[1]), ("x1", nodes[0]), ("t", N + 1)]
    geom = "".join(f'        <DataItem Dimensions="{n}" NumberType="Float" Precision="8" Format="HDF">{ref}:/{c}</DataItem>\n'
                   for c, n in coords)
    text = ('<?xml version="1.0" ?>\n<Xdmf Version="3.0">\n  <Domain>\n'
            '    <Grid Name="depth_state" GridType="Uniform">\n'
            f'      <Topology TopologyType="{topo}" Dimensions="{dims}"/>\n'
            f'      <Geometry GeometryType="{geo}">\n{geom}      </Geometry>\n{body}    </Grid>\n  </Domain>\n</Xdmf>\n')
    out = h5path.with_suffix(".xmf")
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        tmp.write_text(text)
        tmp.replace(out)
    except OSError:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise
    return out
