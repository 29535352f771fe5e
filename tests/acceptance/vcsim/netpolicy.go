package main

// ceso addition: network-policy helpers for the standard-switch model in netsys.go.
//
// The vSphere API reference (HostNetworkPolicy) says port-group policy settings are
// inherited from the containing virtual switch whenever the port group leaves them unset,
// setting by setting, and that HostPortGroup.computedPolicy carries the result "so that
// callers need not duplicate the inheritance logic". govmomi 0.24's simulator stores port
// groups with an empty computedPolicy; mergePolicy computes it.

import (
	"github.com/vmware/govmomi/simulator/esx"
	"github.com/vmware/govmomi/vim25/types"
)

func cloneBool(b *bool) *bool {
	if b == nil {
		return nil
	}
	v := *b
	return &v
}

// pickBool is the port group's value when it sets one, else the switch's (copied).
func pickBool(pg, sw *bool) *bool {
	if pg != nil {
		return cloneBool(pg)
	}
	return cloneBool(sw)
}

func cloneStrings(s []string) []string {
	if s == nil {
		return nil
	}
	return append([]string(nil), s...)
}

// ceso addition: mergePolicy returns the effective (computed) policy of a port group whose
// own overrides are pg, on a virtual switch whose policy is sw (nil when the switch has none).
// Every returned pointer is fresh, so later edits of either input do not leak into it.
func mergePolicy(sw *types.HostNetworkPolicy, pg types.HostNetworkPolicy) types.HostNetworkPolicy {
	if sw == nil {
		sw = &types.HostNetworkPolicy{}
	}
	var out types.HostNetworkPolicy

	// security: allowPromiscuous / macChanges / forgedTransmits, each inherited when unset.
	if sw.Security != nil || pg.Security != nil {
		s, p := sw.Security, pg.Security
		if s == nil {
			s = &types.HostNetworkSecurityPolicy{}
		}
		if p == nil {
			p = &types.HostNetworkSecurityPolicy{}
		}
		out.Security = &types.HostNetworkSecurityPolicy{
			AllowPromiscuous: pickBool(p.AllowPromiscuous, s.AllowPromiscuous),
			MacChanges:       pickBool(p.MacChanges, s.MacChanges),
			ForgedTransmits:  pickBool(p.ForgedTransmits, s.ForgedTransmits),
		}
	}

	// nicTeaming: policy, reversePolicy, notifySwitches, rollingOrder, failureCriteria (field by
	// field) and nicOrder (the active/standby lists as a whole: an override names both lists).
	if sw.NicTeaming != nil || pg.NicTeaming != nil {
		s, p := sw.NicTeaming, pg.NicTeaming
		if s == nil {
			s = &types.HostNicTeamingPolicy{}
		}
		if p == nil {
			p = &types.HostNicTeamingPolicy{}
		}
		t := &types.HostNicTeamingPolicy{
			Policy:         s.Policy,
			ReversePolicy:  pickBool(p.ReversePolicy, s.ReversePolicy),
			NotifySwitches: pickBool(p.NotifySwitches, s.NotifySwitches),
			RollingOrder:   pickBool(p.RollingOrder, s.RollingOrder),
		}
		if p.Policy != "" {
			t.Policy = p.Policy
		}
		if s.FailureCriteria != nil || p.FailureCriteria != nil {
			sf, pf := s.FailureCriteria, p.FailureCriteria
			if sf == nil {
				sf = &types.HostNicFailureCriteria{}
			}
			if pf == nil {
				pf = &types.HostNicFailureCriteria{}
			}
			f := &types.HostNicFailureCriteria{
				CheckSpeed:        sf.CheckSpeed,
				Speed:             sf.Speed,
				CheckDuplex:       pickBool(pf.CheckDuplex, sf.CheckDuplex),
				FullDuplex:        pickBool(pf.FullDuplex, sf.FullDuplex),
				CheckErrorPercent: pickBool(pf.CheckErrorPercent, sf.CheckErrorPercent),
				Percentage:        sf.Percentage,
				CheckBeacon:       pickBool(pf.CheckBeacon, sf.CheckBeacon),
			}
			if pf.CheckSpeed != "" {
				f.CheckSpeed, f.Speed = pf.CheckSpeed, pf.Speed
			} else if pf.Speed != 0 {
				f.Speed = pf.Speed
			}
			if pf.Percentage != 0 {
				f.Percentage = pf.Percentage
			}
			t.FailureCriteria = f
		}
		order := s.NicOrder
		if p.NicOrder != nil {
			order = p.NicOrder
		}
		if order != nil {
			t.NicOrder = &types.HostNicOrderPolicy{
				ActiveNic:  cloneStrings(order.ActiveNic),
				StandbyNic: cloneStrings(order.StandbyNic),
			}
		}
		out.NicTeaming = t
	}

	// offloadPolicy (deprecated since VI API 4.0, still reported): each flag inherited.
	if sw.OffloadPolicy != nil || pg.OffloadPolicy != nil {
		s, p := sw.OffloadPolicy, pg.OffloadPolicy
		if s == nil {
			s = &types.HostNetOffloadCapabilities{}
		}
		if p == nil {
			p = &types.HostNetOffloadCapabilities{}
		}
		out.OffloadPolicy = &types.HostNetOffloadCapabilities{
			CsumOffload:     pickBool(p.CsumOffload, s.CsumOffload),
			TcpSegmentation: pickBool(p.TcpSegmentation, s.TcpSegmentation),
			ZeroCopyXmit:    pickBool(p.ZeroCopyXmit, s.ZeroCopyXmit),
		}
	}

	// shapingPolicy: an override sets "enabled" and the bandwidth figures together.
	shaping := sw.ShapingPolicy
	if pg.ShapingPolicy != nil && pg.ShapingPolicy.Enabled != nil {
		shaping = pg.ShapingPolicy
	}
	if shaping != nil {
		v := *shaping
		v.Enabled = cloneBool(shaping.Enabled)
		out.ShapingPolicy = &v
	}

	return out
}

// ceso addition: normalizeSpecPolicy returns a copy of a port group's own policy with every
// policy group present (empty when the caller sent none). ESXi reports HostPortGroupSpec.policy
// that way: a port group overriding nothing still shows empty security, nicTeaming (with an
// empty failureCriteria), offloadPolicy and shapingPolicy elements, as the simulator's
// recorded ESXi data for "VM Network" shows.
func normalizeSpecPolicy(p types.HostNetworkPolicy) types.HostNetworkPolicy {
	out := mergePolicy(nil, p) // deep copy of p alone
	if out.Security == nil {
		out.Security = &types.HostNetworkSecurityPolicy{}
	}
	if out.NicTeaming == nil {
		out.NicTeaming = &types.HostNicTeamingPolicy{}
	}
	if out.NicTeaming.FailureCriteria == nil {
		out.NicTeaming.FailureCriteria = &types.HostNicFailureCriteria{}
	}
	if out.OffloadPolicy == nil {
		out.OffloadPolicy = &types.HostNetOffloadCapabilities{}
	}
	if out.ShapingPolicy == nil {
		out.ShapingPolicy = &types.HostNetworkTrafficShapingPolicy{}
	}
	return out
}

// ceso addition: defaultSwitchPolicy is the policy ESXi gives a new standard switch whose spec
// leaves settings unset (the API reference: "every virtual switch has some value assigned to
// the policy setting"). It is the simulator's recorded vSwitch0 policy, with the teaming
// order naming the switch's own uplinks, overlaid by whatever the caller did set.
func defaultSwitchPolicy(given *types.HostNetworkPolicy, uplinks []string) *types.HostNetworkPolicy {
	base := mergePolicy(esx.HostConfigInfo.Network.Vswitch[0].Spec.Policy, types.HostNetworkPolicy{})
	base.NicTeaming.NicOrder = &types.HostNicOrderPolicy{ActiveNic: cloneStrings(uplinks)}
	if given == nil {
		return &base
	}
	out := mergePolicy(&base, *given)
	return &out
}
