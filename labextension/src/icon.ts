/** The side panel's icon: a GPU board cut into slices. */
import { LabIcon } from '@jupyterlab/ui-components';

const SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path d="M3 6h18a1 1 0 0 1 1 1v10a1 1 0 0 1-1 1H3a1 1 0 0 1-1-1V7a1 1 0 0 1 1-1zm1 2v8h16V8z"/>
    <rect x="5" y="9.5" width="3" height="5" rx=".5"/>
    <rect x="9" y="9.5" width="2" height="5" rx=".5"/>
    <rect x="12" y="9.5" width="7" height="5" rx=".5" opacity=".45"/>
    <path d="M6 18h2v2H6zm5 0h2v2h-2zm5 0h2v2h-2z"/>
  </g>
</svg>`;

export const gpuSliceIcon = new LabIcon({ name: 'jupyter-mig:gpu-slices', svgstr: SVG });
