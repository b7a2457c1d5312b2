package filterd

import (
	"sort"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vnicfilter/vnicfilter/filterd/datapath"
	"github.com/vnicfilter/vnicfilter/sdk"
)

var (
	descVNICs      = prometheus.NewDesc("vnicfilter_vnics", "Protected vNICs.", nil, nil)
	descBuild      = prometheus.NewDesc("vnicfilter_build_info", "filterd build and datapath.", []string{"version", "abi", "attach_mode"}, nil)
	descChainPkts  = prometheus.NewDesc("vnicfilter_chain_packets_total", "Frames through a vNIC's chain by result (entered, passed, dropped).", []string{"vnic", "direction", "result"}, nil)
	descChainBytes = prometheus.NewDesc("vnicfilter_chain_bytes_total", "Bytes through a vNIC's chain by result (entered, passed, dropped).", []string{"vnic", "direction", "result"}, nil)
	descSlotPkts   = prometheus.NewDesc("vnicfilter_slot_packets_total", "Frames per chain slot by verdict (continue, drop, punt, redirect, consumed, fail_closed, fail_open).", []string{"vnic", "direction", "slot", "filter", "verdict"}, nil)
	descSlotBytes  = prometheus.NewDesc("vnicfilter_slot_bytes_total", "Bytes per chain slot by verdict.", []string{"vnic", "direction", "slot", "filter", "verdict"}, nil)
	descIntrusions = prometheus.NewDesc("vnicfilter_hidden_bridge_intrusions_total", "Ports found on the hidden bridge that were not allowed there, and removed.", []string{"bridge"}, nil)
	descSlowUp     = prometheus.NewDesc("vnicfilter_slowpath_up", "1 if the slot's slow path is running, 0 if its failure mode applies.", []string{"vnic", "slot", "filter"}, nil)
)

// collector reads the datapath's counters at scrape time. It is an
// unchecked collector: filters add series of their own.
type collector struct{ d *Daemon }

func (c *collector) Describe(chan<- *prometheus.Desc) {}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	d := c.d
	d.mu.Lock()
	defer d.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(descBuild, prometheus.GaugeValue, 1, Version, strconv.Itoa(sdk.ABIVersion), d.dp.Mode().String())
	ch <- prometheus.MustNewConstMetric(descVNICs, prometheus.GaugeValue, float64(len(d.vnics)))
	if d.hidden != nil {
		ch <- prometheus.MustNewConstMetric(descIntrusions, prometheus.CounterValue, float64(d.hidden.count.Load()), d.hidden.cfg.Bridge)
	}
	for _, name := range sortedKeys(d.vnics) {
		n := d.vnics[name]
		st, err := n.dp.Stats()
		if err != nil {
			d.log.Warn("metrics: read counters", "vnic", name, "err", err)
			continue
		}
		for _, dir := range []sdk.Direction{sdk.FromVM, sdk.ToVM} {
			ds := dir.String()
			chain := st[dir][sdk.ChainSlot]
			for _, r := range []struct {
				name string
				c    datapath.Counter
			}{{"entered", chain[sdk.StatEnter]}, {"passed", chain[sdk.StatContinue]}, {"dropped", chain[sdk.StatDrop]}} {
				ch <- prometheus.MustNewConstMetric(descChainPkts, prometheus.CounterValue, float64(r.c.Packets), name, ds, r.name)
				ch <- prometheus.MustNewConstMetric(descChainBytes, prometheus.CounterValue, float64(r.c.Bytes), name, ds, r.name)
			}
			for slot, in := range n.slots {
				if in == nil {
					continue
				}
				ss := strconv.Itoa(slot)
				for stat := sdk.StatContinue; stat <= sdk.StatFailOpen; stat++ {
					c := st[dir][slot][stat]
					ch <- prometheus.MustNewConstMetric(descSlotPkts, prometheus.CounterValue, float64(c.Packets), name, ds, ss, in.desc.Name, stat.String())
					ch <- prometheus.MustNewConstMetric(descSlotBytes, prometheus.CounterValue, float64(c.Bytes), name, ds, ss, in.desc.Name, stat.String())
				}
			}
		}
		for slot, in := range n.slots {
			if in == nil {
				continue
			}
			ss := strconv.Itoa(slot)
			if in.punt != nil {
				up := 0.0
				if in.punt.State().String() == "running" {
					up = 1
				}
				ch <- prometheus.MustNewConstMetric(descSlowUp, prometheus.GaugeValue, up, name, ss, in.desc.Name)
			}
			var cs []sdk.Counter
			if in.fast != nil {
				if fc, err := in.fast.Counters(); err == nil {
					cs = append(cs, fc...)
				}
			}
			if in.punt != nil && in.slow == nil {
				cs = append(cs, in.punt.ExternalCounters()...)
			} else if sc, ok := in.slow.(sdk.SlowCounters); ok {
				cs = append(cs, sc.Counters()...)
			}
			for _, fc := range cs {
				emitFilterCounter(ch, name, ss, in.desc.Name, fc)
			}
		}
	}
}

func emitFilterCounter(ch chan<- prometheus.Metric, vnic, slot, filter string, c sdk.Counter) {
	keys := make([]string, 0, len(c.Labels))
	for k := range c.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	labels := append([]string{"vnic", "slot", "filter"}, keys...)
	vals := []string{vnic, slot, filter}
	for _, k := range keys {
		vals = append(vals, c.Labels[k])
	}
	help := c.Help
	if help == "" {
		help = "Reported by the filter."
	}
	vt := prometheus.CounterValue
	if c.Gauge {
		vt = prometheus.GaugeValue
	}
	desc := prometheus.NewDesc("vnicfilter_filter_"+strings.ReplaceAll(filter, "-", "_")+"_"+c.Name, help, labels, nil)
	m, err := prometheus.NewConstMetric(desc, vt, c.Value, vals...)
	if err == nil {
		ch <- m
	}
}
