/**
 * The body of the "Request GPU slice…" dialog: every size on the hub's menu
 * with the profile it gets and how soon, plus "No GPU" and a free-form size.
 */
import { Dialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { h } from './dom';
import { availabilityText, defaultRow } from './format';
import { ICapacity, ISizeRow, ISlice } from './types';

/** What the user chose: a size (profile name or "10gb") or no GPU. */
export type SliceChoice = { kind: 'size'; size: string } | { kind: 'release' };

const RELEASE = '';
const OTHER = '\u0000other';

export class SliceRequestBody extends Widget implements Dialog.IBodyWidget<SliceChoice | null> {
  private readonly other: HTMLInputElement;

  constructor(capacity: ICapacity | null, capacityError: string | null, slice: ISlice | null) {
    super();
    this.addClass('jp-mig-RequestBody');
    const rows = capacity?.sizes ?? [];
    const preselected = defaultRow(rows);
    const current = slice?.profile ?? null;

    this.other = h('input', {
      type: 'text',
      class: 'jp-mig-OtherSize jp-mod-styled',
      placeholder: 'e.g. 10gb',
      'aria-label': 'Other size'
    }) as HTMLInputElement;
    this.other.addEventListener('focus', () => this.select(OTHER));

    const choices = rows.map(row => this.sizeChoice(row, row === preselected, current));
    if (current !== null) {
      choices.unshift(
        this.choice(RELEASE, 'No GPU', '', 'give the slice back', 'jp-mig-mod-release', false, false)
      );
    }
    choices.push(
      h(
        'label',
        { class: 'jp-mig-Option' },
        this.radio(OTHER, preselected === null, false),
        h('span', { class: 'jp-mig-OptionName' }, 'Other size'),
        this.other
      )
    );

    this.node.append(
      ...[
        h(
          'p',
          { class: 'jp-mig-Explain' },
        'Your server restarts with the new slice. Open documents are saved first; ',
          'running kernels stop, so variables in memory are lost.'
        ),
        current !== null ? h('p', { class: 'jp-mig-Current' }, `Current slice: ${current}`) : null,
        slice && !slice.restartable
          ? h(
              'p',
              { class: 'jp-mig-Error' },
              'This server was not started by a JupyterHub set up for jupyter-mig, ',
              'so it cannot restart with another slice.'
            )
          : null,
        capacity && capacity.maxSize.length > 0
          ? h('p', { class: 'jp-mig-Note' }, `Your maximum: ${capacity.maxSize.join(' or ')}.`)
          : null,
        capacityError
          ? h('p', { class: 'jp-mig-Error' }, `Cannot read the cluster's capacity: ${capacityError}`)
          : null,
        h('div', { class: 'jp-mig-Options', role: 'radiogroup' }, ...choices)
      ].filter((part): part is HTMLElement => part !== null)
    );
  }

  getValue(): SliceChoice | null {
    const checked = this.node.querySelector<HTMLInputElement>('input[name="jp-mig-size"]:checked');
    if (!checked) {
      return null;
    }
    if (checked.value === RELEASE) {
      return { kind: 'release' };
    }
    const size = checked.value === OTHER ? this.other.value.trim() : checked.value;
    return size ? { kind: 'size', size } : null;
  }

  private sizeChoice(row: ISizeRow, checked: boolean, current: string | null): HTMLElement {
    const profile = row.profile ? `${row.profile}${row.profile === current ? ' (current)' : ''}` : '';
    const models = row.models.length ? ` on ${row.models.join(', ')}` : '';
    return this.choice(
      row.size,
      row.size,
      profile,
      availabilityText(row),
      `jp-mig-mod-${row.status}`,
      checked,
      row.status === 'unavailable',
      profile ? `${row.size} is served by ${row.profile}${models}` : row.reason
    );
  }

  private choice(
    value: string,
    name: string,
    profile: string,
    availability: string,
    modifier: string,
    checked: boolean,
    disabled: boolean,
    title = ''
  ): HTMLElement {
    return h(
      'label',
      { class: `jp-mig-Option ${modifier}`, title },
      this.radio(value, checked, disabled),
      h('span', { class: 'jp-mig-OptionName' }, name),
      h('span', { class: 'jp-mig-OptionProfile' }, profile),
      h('span', { class: 'jp-mig-Availability' }, availability)
    );
  }

  private radio(value: string, checked: boolean, disabled: boolean): HTMLInputElement {
    const input = h('input', { type: 'radio', name: 'jp-mig-size', value }) as HTMLInputElement;
    input.checked = checked;
    input.disabled = disabled;
    return input;
  }

  private select(value: string): void {
    for (const input of this.node.querySelectorAll<HTMLInputElement>('input[name="jp-mig-size"]')) {
      input.checked = input.value === value;
    }
  }
}
