// Package domainxml reads and writes vnicfilter's configuration in libvirt
// XML: the per-interface filter chains in a domain's <metadata>, and the
// per-portgroup defaults in a network's <metadata>, both as one element in
// the namespace [Namespace]:
//
//	<metadata>
//	  <vnicfilter:filters xmlns:vnicfilter="https://vnicfilter.dev/xmlns/domain/1">
//	    <vnicfilter:interface mac="52:54:00:12:34:56">   <!-- or alias="ua-net0" -->
//	      <vnicfilter:filter name="count" failmode="closed" direction="both">
//	        <vnicfilter:param name="rate" value="10"/>
//	      </vnicfilter:filter>
//	    </vnicfilter:interface>
//	  </vnicfilter:filters>
//	</metadata>
//
// The RELAX NG schemas libvirt/schema/vnicfilter-domain.rng and
// vnicfilter-network.rng describe the element; the parser accepts exactly
// what they accept, and additionally rejects what RELAX NG cannot express
// (an interface, portgroup or parameter named twice). docs/domain-xml.md is
// the operator's guide.
//
// The package is pure: it neither talks to libvirtd nor links any filter,
// so the libvirt hook (which must not call back into libvirtd) and vfctl
// can both use it. Filter names and parameters are checked by [Validate]
// against schemas the caller looks up (filterd's GET /v1/filters in the
// hook). It lives in its own package, not in libvirt/ itself, so that the
// go-libvirt connection and event loop that will live in libvirt/ stay out
// of the hook binary.
package domainxml
